"""Keep the tools we drive offline and quiet: no analytics, no update checks."""

import os

QUIET_ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DVC_NO_ANALYTICS": "1",
    "SE_OFFLINE": "true",
    "SE_AVOID_STATS": "true",
}


def quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
