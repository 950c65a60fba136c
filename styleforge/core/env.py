"""Keep the tools we drive offline and quiet (no analytics, no update checks), and torch's CPU
threads from spinning."""

import os

QUIET_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DVC_NO_ANALYTICS": "1",
    "SE_OFFLINE": "true",
    "SE_AVOID_STATS": "true",
    # OpenMP threads that spin while they wait turn any other load on the CPU into a collapse: a
    # fine-tune step on 2 cores beside one busy process ran 28x slower (697 s/kimg against 25);
    # waiting passively, a conv step under that load took 0.9 s against 4.0 (1 thread: 0.82); on
    # the idle machine it costs about 5% (0.49 s against 0.46).
    # Set before torch loads OpenMP, so every process styleforge starts (dvc's stages) has it.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
