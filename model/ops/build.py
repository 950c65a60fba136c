"""Just-in-time build of the kernels in csrc/, cached by the hash of their sources.

Environment:
  STYLEFORGE_OPS        auto (default): use the extension if it builds, else the reference.
                        cpp: require the extension; raise if it cannot be built or if a
                        kernel fails its check (check.py).
                        ref: never build; always the pure-PyTorch reference.
  STYLEFORGE_OPS_CACHE  build cache root (default ~/.cache/styleforge/ops). Each build lives
                        in <root>/<device>-<hash>, so a source change rebuilds and an
                        unchanged one just reloads.

The CPU and CUDA kernels are separate extensions, built the first time a tensor on that device
type needs them. One process builds at a time per folder (an OS file lock, released even if the
builder dies); the others wait and then load its result. A build that fails warns once and the
reference is used for the rest of the process: it is never retried per call. Before a loaded
kernel is trusted on a device it is checked against its reference (check.py).
"""
import hashlib
import importlib.resources
import os
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

import filelock
import torch

# The sources ship as package data (styleforge.csrc), so a wheel builds the same kernels as a checkout.
SOURCE_DIR = Path(str(importlib.resources.files("styleforge.csrc")))
LOCK_TIMEOUT_S = 900  # a cold CUDA build can take minutes; longer than that is a hung builder

_SOURCES = {
    "cpu": ["bind.cpp", "upfirdn2d_cpu.cpp", "fused_bias_act_cpu.cpp"],
    "cuda": ["bind.cpp", "upfirdn2d_cuda.cu", "fused_bias_act_cuda.cu"],
}
# Tuples, and copies into load(): it appends to the lists it is given, which changed the hash.
_CFLAGS = ("-O3", "-fopenmp")
_LDFLAGS = ("-fopenmp",)
_CUDA_CFLAGS = ("-O3", "--use_fast_math")
DTYPES = {
    "cpu": {torch.float32, torch.float64},
    "cuda": {torch.float16, torch.bfloat16, torch.float32, torch.float64},
}
MODES = ("auto", "cpp", "ref")

_lock = threading.Lock()
_loaded = {}  # device type -> extension module, or the exception that stopped its build
build_attempts = {"cpu": 0, "cuda": 0}  # builds started in this process; a test checks it
build_info = {}  # device type -> {"dir", "compiled", "seconds"} of the build that loaded


class BuildError(RuntimeError):
    """The extension could not be built or loaded; the message names the cause."""


def mode():
    value = os.environ.get("STYLEFORGE_OPS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"STYLEFORGE_OPS={value!r}: expected one of {', '.join(MODES)}")
    return value


def cache_root():
    default = Path.home() / ".cache" / "styleforge" / "ops"
    return Path(os.environ.get("STYLEFORGE_OPS_CACHE") or default).expanduser()


def _source_hash(device_type):
    """Hash of everything that changes the binary: sources, headers, flags, torch, Python."""
    digest = hashlib.sha256()
    files = [SOURCE_DIR / name for name in _SOURCES[device_type]]
    files += sorted(SOURCE_DIR.glob("*.h")) + sorted(SOURCE_DIR.glob("*.cuh"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    config = [_CFLAGS, _LDFLAGS, _CUDA_CFLAGS, torch.__version__, torch.version.cuda, sys.version]
    digest.update(repr(config).encode())
    return digest.hexdigest()[:16]


def build_dir(device_type):
    """Where the current sources for 'cpu' or 'cuda' are (or would be) built."""
    return cache_root() / f"{device_type}-{_source_hash(device_type)}"


def _check_toolchain(device_type):
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        raise BuildError("ninja is not on PATH (pip install ninja, or activate the venv)")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise BuildError(f"no C++ compiler: {compiler!r} is not on PATH (set CXX)")
    if device_type == "cuda" and cpp_extension.CUDA_HOME is None:
        raise BuildError("no CUDA toolkit found for nvcc (set CUDA_HOME)")
    missing = [name for name in _SOURCES[device_type] if not (SOURCE_DIR / name).is_file()]
    if missing:
        raise BuildError(f"missing sources in {SOURCE_DIR}: {', '.join(missing)}")


def _build(device_type):
    from torch.utils import cpp_extension

    build_attempts[device_type] += 1
    _check_toolchain(device_type)
    folder = build_dir(device_type)
    folder.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(folder / "styleforge.lock"), timeout=LOCK_TIMEOUT_S):
        # torch's own lock file is left behind when a build is killed, and then every later
        # start waits on it forever. Holding our lock, nobody else builds here: it is stale.
        (folder / "lock").unlink(missing_ok=True)
        name = f"styleforge_ops_{folder.name.replace('-', '_')}"
        compiled = not (folder / f"{name}.so").exists()
        started = time.perf_counter()
        try:
            module = cpp_extension.load(
                name=name,
                sources=[str(SOURCE_DIR / source) for source in _SOURCES[device_type]],
                extra_cflags=list(_CFLAGS),
                extra_ldflags=list(_LDFLAGS),
                extra_cuda_cflags=list(_CUDA_CFLAGS),
                build_directory=str(folder),
                verbose=False,
            )
        except Exception as error:  # compiler errors arrive as RuntimeError with the log
            raise BuildError(_summarise(error, folder)) from error
    build_info[device_type] = {
        "dir": str(folder),
        "compiled": compiled,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return module


def _summarise(error, folder):
    """The build folder and the first compiler error, not the whole ninja log."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in lines if "error:" in line or "error " in line[:7]), None)
    return f"build in {folder} failed: {cause or (lines[-1] if lines else type(error).__name__)}"


def extension(device_type):
    """The loaded extension for 'cpu' or 'cuda', or None where the reference must be used."""
    if mode() == "ref" or device_type not in _SOURCES:
        return None
    if device_type == "cuda" and not torch.cuda.is_available():
        return None
    with _lock:
        if device_type not in _loaded:
            try:
                _loaded[device_type] = _build(device_type)
            except Exception as error:
                _loaded[device_type] = error
                if mode() == "auto":
                    warnings.warn(
                        f"styleforge ops: {device_type} extension unavailable ({error}); "
                        "using the pure-PyTorch reference for the rest of this process",
                        RuntimeWarning,
                        stacklevel=3,
                    )
    loaded = _loaded[device_type]
    if isinstance(loaded, Exception):
        if mode() == "cpp":
            raise BuildError(f"STYLEFORGE_OPS=cpp but the {device_type} extension is unavailable: {loaded}")
        return None
    return loaded


def failure(device_type):
    """The exception that stopped this process's build for 'cpu' or 'cuda', or None."""
    loaded = _loaded.get(device_type)
    return loaded if isinstance(loaded, Exception) else None


def extension_for(tensor):
    """The extension that handles this tensor's device and dtype, or None for the reference."""
    device_type = tensor.device.type
    if tensor.dtype not in DTYPES.get(device_type, ()):
        return None
    return extension(device_type)
