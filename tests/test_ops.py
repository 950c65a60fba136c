"""The custom ops against their pure-PyTorch references (values, gradients, second-order
gradients) and the build machinery around them (backend choice, failed and concurrent builds).

Every test here runs with STYLEFORGE_OPS=cpp and shares one build of the CPU extension (the
default cache, so a warm cache costs nothing). CUDA cases skip where torch sees no GPU.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from styleforge.model.ops import (
    FusedLeakyReLU,
    backend,
    build,
    fused_leaky_relu,
    fused_leaky_relu_ref,
    upfirdn2d,
    upfirdn2d_ref,
)

REPO = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


@pytest.fixture(scope="module", autouse=True)
def extension_required():
    """Build (or reload) once for the module; a build failure fails the tests, not skips."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLEFORGE_OPS", "cpp")
        build.extension("cpu")
        yield


def blur(taps, gain=1.0):
    k = torch.tensor(taps, dtype=torch.float64)
    k = k[:, None] * k[None, :]
    return k / k.sum() * gain


KERNELS = {
    "4-tap": blur([1, 3, 3, 1]),
    "6-tap": blur([1, 5, 10, 10, 5, 1]),
    "3x5 non-separable": torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
}
# (up, down, pad): StyleGAN2's own uses first, then odd, negative (cropping) and mixed x/y.
GEOMETRIES = [
    (1, 1, (1, 1)),
    (1, 1, (2, 2)),
    (2, 1, (2, 1)),
    (1, 2, (1, 1)),
    (4, 1, (3, -2)),
    (1, 4, (-1, 2)),
    (2, 2, (0, 3)),
    ((2, 1), (1, 2), (1, 2, 0, -1)),
]
GRAD_GEOMETRIES = [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (-1, 2)), ((2, 1), (1, 2), (1, 2, 0, -1))]


def geometry_id(geometry):
    up, down, pad = geometry
    return f"up{up}-down{down}-pad{pad}".replace(" ", "")


# ---------------------------------------------------------------------------- upfirdn2d


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", KERNELS.values(), ids=KERNELS.keys())
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_upfirdn2d_matches_reference(device, kernel, geometry):
    up, down, pad = geometry
    x = torch.randn(2, 3, 13, 11, dtype=torch.float64, device=device)
    kernel = kernel.to(device)
    for view in (x, x.transpose(2, 3), x[:, ::2]):  # contiguous, transposed, strided
        got, want = upfirdn2d(view, kernel, up, down, pad), upfirdn2d_ref(view, kernel, up, down, pad)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["4-tap", "6-tap"])
@pytest.mark.parametrize("geometry", GRAD_GEOMETRIES, ids=geometry_id)
def test_upfirdn2d_gradients(device, kernel, geometry):
    up, down, pad = geometry
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    k = KERNELS[kernel].to(device)

    def op(x):
        return upfirdn2d(x, k, up, down, pad)

    assert gradcheck(op, (x,))
    assert gradgradcheck(op, (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize(
    "kernel, up, down, pad",
    [
        ("4-tap", 1, 1, (1, 1)),  # blur after a transposed conv
        ("4-tap", 2, 1, (2, 1)),  # upsample
        ("4-tap", 1, 2, (1, 1)),  # downsample
        ("6-tap", 2, 1, (3, 2)),
        ("6-tap", 1, 2, (2, 3)),
    ],
)
def test_upfirdn2d_float32_real_shapes(device, batch, kernel, up, down, pad):
    x = torch.randn(batch, 32, 33, 33, device=device, requires_grad=True)
    k = KERNELS[kernel].float().to(device) * up**2
    got = upfirdn2d(x, k, up, down, pad)
    want = upfirdn2d_ref(x, k, up, down, pad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(got)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    (want_grad,) = torch.autograd.grad(want, x, grad)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-5)


def test_upfirdn2d_accepts_1d_kernel_and_kernel_gradients():
    x = torch.randn(1, 2, 8, 8)
    taps = torch.tensor([1.0, 3, 3, 1]) / 8
    torch.testing.assert_close(upfirdn2d(x, taps, 2, 1, (2, 1)), upfirdn2d_ref(x, blur([1, 3, 3, 1]).float(), 2, 1, (2, 1)))
    # A kernel that needs a gradient goes through the reference, which can give it one.
    k = blur([1, 3, 3, 1]).float().requires_grad_()
    upfirdn2d(x, k, 1, 2, (1, 1)).sum().backward()
    assert k.grad is not None


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision(dtype):
    x = torch.randn(4, 16, 32, 32, device="cuda", dtype=dtype)
    k = KERNELS["4-tap"].to("cuda", dtype) * 4
    bias = torch.randn(16, device="cuda", dtype=dtype)
    ref_up = upfirdn2d_ref(x.float(), k.float(), 2, 1, (2, 1))
    torch.testing.assert_close(upfirdn2d(x, k, 2, 1, (2, 1)).float(), ref_up, rtol=2e-2, atol=2e-2)
    ref_act = fused_leaky_relu_ref(x.float(), bias.float())
    torch.testing.assert_close(fused_leaky_relu(x, bias).float(), ref_act, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------ fused_bias_act

ACT_SHAPES = {"NCHW": (8, 512, 4, 4), "batch 1": (1, 64, 16, 16), "linear": (8, 512), "3-D": (2, 5, 7),
              "1x1 map": (4, 8, 1, 1)}  # the bias gradient once read a null bias here


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ACT_SHAPES.values(), ids=ACT_SHAPES.keys())
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("clamp", [None, 0.8])
@pytest.mark.parametrize("negative_slope", [0.2, 0.1])
def test_fused_leaky_relu_is_bitwise_the_reference(device, shape, use_bias, clamp, negative_slope):
    """Forward and first-order gradients are the same products as the reference, in float32."""
    x = torch.randn(shape, device=device, requires_grad=True)
    bias = torch.randn(shape[1], device=device, requires_grad=True) if use_bias else None
    kwargs = dict(negative_slope=negative_slope, scale=2**0.5, clamp=clamp)
    got, want = fused_leaky_relu(x, bias, **kwargs), fused_leaky_relu_ref(x, bias, **kwargs)
    assert torch.equal(got, want)
    grad = torch.randn_like(got)
    inputs = (x, bias) if use_bias else (x,)
    got_grads = torch.autograd.grad(got, inputs, grad)
    want_grads = torch.autograd.grad(want, inputs, grad)
    assert torch.equal(got_grads[0], want_grads[0])
    if use_bias:  # a sum: the order of additions differs
        torch.testing.assert_close(got_grads[1], want_grads[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (4, 3)])
def test_fused_leaky_relu_gradients(device, clamp, shape):
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    bias = torch.randn(shape[1], dtype=torch.float64, device=device, requires_grad=True)

    def op(x, bias):
        return fused_leaky_relu(x, bias, clamp=clamp)

    assert gradcheck(op, (x, bias))
    assert gradgradcheck(op, (x, bias))


@pytest.mark.parametrize("device", DEVICES)
def test_fused_leaky_relu_non_contiguous(device):
    x = torch.randn(2, 8, 6, 6, device=device).to(memory_format=torch.channels_last)
    bias = torch.randn(8, device=device)
    for view in (x, x.transpose(2, 3), x[:, ::2]):
        b = bias[: view.shape[1]]
        assert torch.equal(fused_leaky_relu(view, b), fused_leaky_relu_ref(view, b))


def test_fused_leaky_relu_module_matches_rosinality_checkpoints():
    layer = FusedLeakyReLU(16)
    assert list(layer.state_dict()) == ["bias"] and layer.bias.shape == (16,)
    layer.load_state_dict({"bias": torch.randn(16)})
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(layer(x), fused_leaky_relu_ref(x, layer.bias))
    assert FusedLeakyReLU(16, bias=False).state_dict() == {}


# ---------------------------------------------------------------------- backend and build


def test_backend_follows_environment(monkeypatch):
    assert backend("cpu") == "cpp"
    assert backend("cpu", torch.float16) == "ref"  # the CPU kernels take float32 and float64
    monkeypatch.setenv("STYLEFORGE_OPS", "ref")
    assert backend("cpu") == "ref"
    x, k = torch.randn(1, 1, 8, 8), blur([1, 3, 3, 1]).float()
    assert build.extension_for(x) is None
    assert torch.equal(upfirdn2d(x, k, pad=(1, 1)), upfirdn2d_ref(x, k, pad=(1, 1)))
    monkeypatch.setenv("STYLEFORGE_OPS", "auto")
    assert backend("cpu") == "cpp"
    monkeypatch.setenv("STYLEFORGE_OPS", "fast")
    with pytest.raises(ValueError, match="STYLEFORGE_OPS"):
        backend("cpu")


def test_source_change_moves_build_folder(tmp_path, monkeypatch):
    sources = tmp_path / "csrc"
    shutil.copytree(build.SOURCE_DIR, sources)
    monkeypatch.setattr(build, "SOURCE_DIR", sources)
    before = build.build_dir("cpu")
    with open(sources / "upfirdn2d_cpu.cpp", "a") as source:
        source.write("// edited\n")
    assert build.build_dir("cpu") != before


# A child process: point the build at a source folder, then call both ops three times.
CHILD = """
import json, sys, time, warnings
from pathlib import Path
import torch
from styleforge.model.ops import build, fused_leaky_relu, fused_leaky_relu_ref, upfirdn2d, upfirdn2d_ref

build.SOURCE_DIR = Path(sys.argv[1])
x, k = torch.randn(1, 2, 8, 8), torch.ones(2, 2) / 4
report = {"errors": [], "matches_reference": True}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        started = time.perf_counter()
        try:
            same = torch.equal(upfirdn2d(x, k), upfirdn2d_ref(x, k))
            same &= torch.equal(fused_leaky_relu(x), fused_leaky_relu_ref(x))
            report["matches_reference"] &= same
        except Exception as error:
            report["errors"].append(f"{type(error).__name__}: {error}")
        report.setdefault("seconds", []).append(time.perf_counter() - started)
report["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
report["attempts"] = build.build_attempts["cpu"]
report["info"] = build.build_info.get("cpu")
print(json.dumps(report))
"""


def run_child(sources, cache, mode="auto", **env):
    environment = {**os.environ, "STYLEFORGE_OPS": mode, "STYLEFORGE_OPS_CACHE": str(cache), **env}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(sources)], cwd=REPO, env=environment, stdout=subprocess.PIPE, text=True
    )


def child_report(process):
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def broken_sources(tmp_path):
    sources = tmp_path / "broken"
    sources.mkdir()
    for name in ("bind.cpp", "upfirdn2d_cpu.cpp", "fused_bias_act_cpu.cpp"):
        (sources / name).write_text("#error deliberately broken source\n")
    return sources


def test_failed_build_warns_once_and_falls_back(broken_sources, tmp_path):
    report = child_report(run_child(broken_sources, tmp_path / "cache"))
    assert report["attempts"] == 1  # three calls of each op, one build
    assert len(report["warnings"]) == 1
    assert "deliberately broken" in report["warnings"][0] and "reference" in report["warnings"][0]
    assert report["matches_reference"] and not report["errors"]


def test_failed_build_raises_under_cpp_without_retrying(broken_sources, tmp_path):
    report = child_report(run_child(broken_sources, tmp_path / "cache", mode="cpp"))
    assert report["attempts"] == 1
    assert len(report["errors"]) == 3 and all("BuildError" in e for e in report["errors"])


@pytest.mark.parametrize(
    "env, cause",
    [({"PATH": "/nonexistent"}, "ninja is not on PATH"), ({"CXX": "/nonexistent/c++"}, "no C++ compiler")],
    ids=["no-ninja", "no-compiler"],
)
def test_missing_toolchain_is_named(tmp_path, env, cause):
    report = child_report(run_child(build.SOURCE_DIR, tmp_path / "cache", **env))
    assert report["attempts"] == 1 and len(report["warnings"]) == 1
    assert cause in report["warnings"][0]


@pytest.fixture
def tiny_sources(tmp_path):
    """An extension that compiles in seconds: the locking, not the kernels, is under test."""
    sources = tmp_path / "tiny"
    sources.mkdir()
    (sources / "bind.cpp").write_text(
        "#include <pybind11/pybind11.h>\nPYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def(\"answer\", [] { return 42; }); }\n"
    )
    for name in ("upfirdn2d_cpu.cpp", "fused_bias_act_cpu.cpp"):
        (sources / name).write_text("// empty\n")
    return sources


def test_concurrent_builds_share_one_compile_despite_stale_lock(tiny_sources, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(build, "SOURCE_DIR", tiny_sources)
    monkeypatch.setenv("STYLEFORGE_OPS_CACHE", str(cache))
    folder = build.build_dir("cpu")
    folder.mkdir(parents=True)
    (folder / "lock").touch()  # what a killed torch build leaves; it used to hang every start
    # The tiny module has no ops, so the children report errors calling them; the build is
    # what matters here.
    reports = [child_report(p) for p in [run_child(tiny_sources, cache, mode="cpp") for _ in range(2)]]
    assert sorted(r["info"]["compiled"] for r in reports) == [False, True]
    assert all(r["info"]["dir"] == str(folder) and r["attempts"] == 1 for r in reports)


def test_unchanged_sources_reload_without_compiling(tmp_path):
    report = child_report(run_child(build.SOURCE_DIR, build.cache_root(), mode="cpp"))
    assert report["errors"] == [] and report["info"]["compiled"] is False
