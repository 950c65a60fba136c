"""Each compiled kernel proves itself against its reference before it is trusted on a device.

At the first use of an op on a device (or the first `backend(...)` asking about it), the op's
fixed small problem runs through the kernel and through the pure-PyTorch reference: forward,
first derivative and second derivative (R1 and path length differentiate through the ops), in
float32, plus the forward in every other dtype the kernel takes. The reference runs in float64
on the same values, so the tolerance measures the kernel's own arithmetic. A mismatch, or an
exception from the kernel (a launch failure), disables that kernel on that device with one
warning naming the reason; the reference runs instead. Under STYLEFORGE_OPS=cpp a disabled
kernel is an error instead, as a failed build is.

Verdicts are kept in `check.json` inside the build folder (build.py: one folder per device type
and source hash), keyed by the device (name and compute capability) and a hash of the check's
own code, so later processes on the same device and build read the verdict instead of checking
again. `styleforge doctor --recheck` checks again regardless.

A launch failure that poisons the CUDA context (an illegal address, say) leaves this process
unable to run even the reference; its verdict is written first, so the next process is safe.
"""
from __future__ import annotations

import functools
import hashlib
import json
import platform
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

import filelock
import torch

from styleforge.core.io import atomic_write_json

from . import build

VERDICT_FILE = "check.json"
# Worst error allowed, relative to the largest magnitude of the expected tensor. The reference
# is evaluated in float64 on the inputs already rounded to the kernel's dtype, so these bound
# the kernel's own rounding: a few ulps of accumulation, far below any indexing or formula bug.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# Below this magnitude an expected tensor counts as zero: the error is then measured absolutely.
_FLOOR = 1e-6


class KernelCheckError(RuntimeError):
    """STYLEFORGE_OPS=cpp, but a kernel failed its check on this device."""


class Case(NamedTuple):
    """One fixed problem: both paths take the same float64 CPU inputs (moved and cast by the
    check); those that require grad are differentiated, to second order."""

    label: str
    kernel: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    max_error: float | None  # worst relative error over the cases; None if the kernel raised
    seconds: float
    checked_at: str
    cached: str | None = None  # the verdict file it was read from; None when checked here


_cases: dict[str, Callable[[torch.Generator], list[Case]]] = {}  # op -> its fixed problems
_verdicts: dict[tuple[str, torch.device], Verdict] = {}
_lock = threading.Lock()
checks_run = {"cpu": 0, "cuda": 0}  # checks run in this process; a test checks it


def register(op: str, cases: Callable[[torch.Generator], list[Case]]) -> None:
    """Called by each op module at import: `cases(generator)` builds its fixed problems."""
    _cases[op] = cases


def ops() -> list[str]:
    return list(_cases)


def use_kernel(op: str, tensor: torch.Tensor) -> bool:
    """Whether op runs its compiled kernel for this tensor: built, dtype taken, check passed."""
    if build.extension_for(tensor) is None:
        return False
    verdict = _verdicts.get((op, tensor.device)) or verdict_for(op, tensor.device)
    if verdict.ok:
        return True
    if build.mode() == "cpp":
        raise KernelCheckError(f"STYLEFORGE_OPS=cpp but the {tensor.device} {op} kernel failed its check: {verdict.reason}")
    return False


def verdict_for(op: str, device: torch.device | str, force: bool = False) -> Verdict:
    """The check's verdict for op on device: from this process, the verdict file, or run now
    (force: run now regardless)."""
    device = _normalise(device)
    with _lock:
        verdict = None if force else _verdicts.get((op, device))
        if verdict is None:
            verdict = (None if force else _read(op, device)) or _check_and_store(op, device)
            _verdicts[(op, device)] = verdict
            if not verdict.ok:
                again = "; `styleforge doctor --recheck` checks again" if verdict.cached else ""
                warnings.warn(
                    f"styleforge ops: the {device} {op} kernel is disabled on {device_key(device)}: "
                    f"{verdict.reason}{again}. Using the pure-PyTorch reference for it on this device.",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return verdict


def check(device: torch.device | str, force: bool = False) -> dict[str, Verdict]:
    """Every op's verdict on device (building the extension if needed); force checks again."""
    device = _normalise(device)
    if build.extension(device.type) is None:
        return {}
    return {op: verdict_for(op, device, force) for op in _cases}


def decide(op: str | None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[str, str]:
    """(backend, reason) for op (None: every op) on tensors of this device and dtype.

    backend is 'cpp' (CPU kernel), 'cuda' (CUDA kernel) or 'ref'; for every op at once it is
    'mixed' where the ops differ."""
    device = _normalise(device)
    if op is None:
        decisions = {name: decide(name, device, dtype) for name in _cases}
        backends = {backend for backend, _ in decisions.values()}
        reasons = {reason for _, reason in decisions.values()}
        backend = backends.pop() if len(backends) == 1 else "mixed"
        reason = reasons.pop() if len(reasons) == 1 else "; ".join(f"{name}: {r}" for name, (_, r) in decisions.items())
        return backend, reason
    if op not in _cases:
        raise ValueError(f"unknown op {op!r}: expected one of {', '.join(_cases)}")
    if build.mode() == "ref":
        return "ref", "STYLEFORGE_OPS=ref"
    if device.type not in build.DTYPES:
        return "ref", f"no compiled kernels for {device.type} devices"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "ref", "torch sees no CUDA device"
    if dtype not in build.DTYPES[device.type]:
        taken = ", ".join(sorted(str(t).removeprefix("torch.") for t in build.DTYPES[device.type]))
        return "ref", f"the {device.type} kernels take {taken}, not {str(dtype).removeprefix('torch.')}"
    try:
        loaded = build.extension(device.type)
    except build.BuildError as error:  # STYLEFORGE_OPS=cpp: the ops raise it, a report names it
        return "ref", str(error)
    if loaded is None:
        return "ref", f"the {device.type} extension is unavailable: {build.failure(device.type)}"
    verdict = verdict_for(op, device)
    compiled = "cpp" if device.type == "cpu" else "cuda"
    source = f" (verdict cached in {verdict.cached})" if verdict.cached else ""
    return (compiled if verdict.ok else "ref"), verdict.reason + source


def backend(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, op: str | None = None) -> str:
    """Which implementation runs for tensors of this device and dtype: 'cpp', 'cuda' or 'ref'
    (for every op at once: 'mixed' where one kernel is disabled and another is not)."""
    return decide(op, device, dtype)[0]


def reason(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, op: str | None = None) -> str:
    """Why `backend` answers what it does: the mode, the dtype, the build, or the check's verdict."""
    return decide(op, device, dtype)[1]


def device_key(device: torch.device | str) -> str:
    """What a verdict is valid for beyond the build: the GPU model, or the CPU architecture."""
    device = _normalise(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} sm_{props.major}{props.minor}"
    return f"cpu {platform.machine()}"


def verdict_file(device_type: str) -> Path | None:
    """check.json beside the loaded build; None where no build was loaded (nothing to key it by)."""
    info = build.build_info.get(device_type)
    return Path(info["dir"]) / VERDICT_FILE if info else None


# ------------------------------------------------------------------------------ the check


def _normalise(device: torch.device | str) -> torch.device:
    """Tensors on the current GPU report cuda:N, never bare 'cuda': key verdicts the same way."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def _isolated(device: torch.device):
    """The check may start inside a caller's no_grad, inference_mode or autocast: undo them
    here. Its random inputs come from its own generator, never the caller's RNG state."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        if device.type == "cuda":
            with torch.cuda.device(device):
                yield
            return
        # Problems this small cost more in thread hand-offs than in arithmetic: on two busy
        # cores the check took 0.6 s with two threads and 0.02 s with one.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _derivatives(fn, inputs, device, dtype) -> dict[str, torch.Tensor]:
    """fn's output, its vector-Jacobian product, and the derivative of that product (with
    respect to the cotangent and to the inputs) along fixed directions: what R1 computes."""
    xs = [x.to(device, dtype).requires_grad_(x.requires_grad) for x in inputs]
    out = fn(*xs)
    results = {"forward": out}
    wrt = [x for x in xs if x.requires_grad]
    if not wrt:
        return results
    directions = torch.Generator().manual_seed(1)

    def direction(like):
        return torch.randn(like.shape, generator=directions, dtype=torch.float64).to(device, dtype)

    cotangent = direction(out).requires_grad_(True)
    # <out, v> rather than grad_outputs=v: the same product, and torch imports sympy (~0.5 s) at
    # the first explicit grad_outputs, which the check should not add to a training process.
    firsts = torch.autograd.grad((out * cotangent).sum(), wrt, create_graph=True)
    results.update({f"first derivative {i}": g for i, g in enumerate(firsts)})
    projection = sum((g * direction(g)).sum() for g in firsts)
    seconds = torch.autograd.grad(projection, [cotangent, *wrt], allow_unused=True)
    for i, (g, like) in enumerate(zip(seconds, [cotangent, *wrt])):
        results[f"second derivative {i}"] = torch.zeros_like(like) if g is None else g  # unused: zero
    return results


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    if got.shape != want.shape:
        return float("inf")
    scale = max(want.abs().max().item(), _FLOOR) if want.numel() else 1.0
    return (got.double() - want).abs().max().item() / scale if want.numel() else 0.0


def _run(op: str, device: torch.device) -> tuple[float | None, str | None]:
    """(worst error, None) when every case matches; (error or None, what failed) otherwise."""
    worst = 0.0
    full, *others = [torch.float32] + sorted(build.DTYPES[device.type] - {torch.float32}, key=str)
    with _isolated(device):
        for case in _cases[op](torch.Generator().manual_seed(0)):
            for dtype in (full, *others):
                rounded = [x.detach().to(dtype).double().requires_grad_(x.requires_grad and dtype == full) for x in case.inputs]
                # The reference first: a kernel's asynchronous CUDA error must surface in its own try.
                want = _derivatives(case.reference, rounded, device, torch.float64)
                try:
                    got = _derivatives(case.kernel, rounded, device, dtype)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                except Exception as error:  # a launch failure, a missing symbol, a bad shape
                    first_line = (str(error).strip().splitlines() or [""])[0]
                    return None, f"{case.label} ({_name(dtype)}): the kernel raised {type(error).__name__}: {first_line}"
                for name, expected in want.items():
                    error = _error(got[name].detach(), expected.detach())
                    if not error <= TOLERANCE[dtype]:  # `not <=` also catches NaN
                        return error, (f"{case.label} ({_name(dtype)}): {name} differs from the reference by "
                                       f"{error:.2g} of its magnitude (tolerance {TOLERANCE[dtype]:.0e})")
                    worst = max(worst, error)
    return worst, None


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check(op: str, device: torch.device) -> Verdict:
    checks_run[device.type] = checks_run.get(device.type, 0) + 1
    started = time.perf_counter()
    worst, failure = _run(op, device)
    seconds = round(time.perf_counter() - started, 4)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if failure:
        return Verdict(False, f"failed its check: {failure}", worst, seconds, now)
    dtypes = ", ".join(_name(t) for t in sorted(build.DTYPES[device.type] - {torch.float32}, key=str))
    covered = "forward and 1st and 2nd derivatives in float32" + (f", forward in {dtypes}" if dtypes else "")
    return Verdict(True, f"matches the reference ({covered}; worst error {worst:.1g}; checked in "
                         f"{seconds * 1e3:.0f} ms)", worst, seconds, now)


# ------------------------------------------------------------------------- the verdict file


@functools.cache
def _code_hash() -> str:
    """The check and the references it trusts: changing either invalidates stored verdicts."""
    digest = hashlib.sha256()
    for name in ("check.py", "upfirdn2d.py", "fused_act.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def _entry_key(device: torch.device) -> str:
    return f"{device_key(device)} / check {_code_hash()}"


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or not ours: a fresh check rewrites it
        return {}


def _read(op: str, device: torch.device) -> Verdict | None:
    path = verdict_file(device.type)
    stored = _load(path).get(_entry_key(device), {}).get(op) if path else None
    if not isinstance(stored, dict):
        return None
    try:
        return Verdict(**{**stored, "cached": str(path)})
    except TypeError:  # written by another version of this module
        return None


def _check_and_store(op: str, device: torch.device) -> Verdict:
    verdict = _check(op, device)
    path = verdict_file(device.type)
    if path is None:
        return verdict
    try:
        # Other processes (DDP ranks, parallel tests) may store verdicts for the same build.
        with filelock.FileLock(str(path) + ".lock", timeout=60):
            stored = _load(path)
            entry = stored.setdefault(_entry_key(device), {})
            entry[op] = {k: v for k, v in asdict(verdict).items() if k != "cached"}
            atomic_write_json(path, stored)
    except (OSError, filelock.Timeout):  # a read-only or busy cache: the verdict holds for this process
        pass
    return verdict
