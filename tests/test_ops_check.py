"""The kernels' self-check (model/ops/check.py): the real C++ kernels pass it; a kernel that is
wrong (output, launch or second derivative) is disabled with one warning and the reference runs
instead; verdicts are stored beside the build and reused by later processes without checking.

In-process tests point the verdict file at a temp folder; the cross-process tests run children
on a copy of the built extension, so the user's cache is never rewritten with a wrong verdict.
"""
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from styleforge.model.ops import (
    backend,
    build,
    check,
    fused_act,
    fused_leaky_relu,
    fused_leaky_relu_ref,
    reason,
    upfirdn2d,
    upfirdn2d_ref,
)
from tests.conftest import REPO

OPS = ("upfirdn2d", "fused_bias_act")


class Faulty:
    """The real extension, with one kernel made wrong: its output scaled by 1.001 (a bug
    well inside plausible-looking values), or raising as a failed launch does."""

    def __init__(self, extension, op, fault):
        self._extension, self._op, self._fault = extension, op, fault

    def __getattr__(self, name):
        function = getattr(self._extension, name)
        if name != self._op:
            return function

        def wrong(*args):
            if self._fault == "raise":
                raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
            return function(*args) * 1.001

        return wrong


@pytest.fixture
def built(monkeypatch):
    """The CPU extension's build folder, built or reloaded now (a failure fails the test)."""
    with monkeypatch.context() as patch:
        patch.setenv("STYLEFORGE_OPS", "cpp")
        build.extension("cpu")
    return build.build_info["cpu"]["dir"]


@pytest.fixture
def fresh(built, monkeypatch, tmp_path):
    """The built CPU extension, no verdicts in this process, the verdict file in tmp_path."""
    monkeypatch.setenv("STYLEFORGE_OPS", "auto")
    monkeypatch.setattr(check, "_verdicts", {})
    monkeypatch.setitem(build.build_info, "cpu", {**build.build_info["cpu"], "dir": str(tmp_path)})
    return tmp_path / check.VERDICT_FILE


def use_both_ops():
    """Each op forward, backward and double backward (as R1 does); True if all match the reference."""
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    k = torch.tensor([[1.0, 3, 3, 1]]).T @ torch.tensor([[1.0, 3, 3, 1]]) / 16
    same = True
    for op, ref in ((lambda x: upfirdn2d(x, k, 2, 1, (2, 1))), (lambda x: upfirdn2d_ref(x, k, 2, 1, (2, 1)))), (
        (lambda x: fused_leaky_relu(x, bias)), (lambda x: fused_leaky_relu_ref(x, bias))
    ):
        results = []
        for fn in (op, ref):
            out = fn(x)
            (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
            (second,) = torch.autograd.grad(grad.square().sum(), x)
            results.append((out, grad, second))
        same &= all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(*results))
    return same


def kernel_warnings(caught):
    return [str(w.message) for w in caught if "styleforge ops" in str(w.message)]


def test_real_kernels_pass_and_the_verdicts_are_stored(fresh):
    before = check.checks_run["cpu"]
    verdicts = check.check("cpu")
    assert set(verdicts) == set(OPS) and all(v.ok for v in verdicts.values()), verdicts
    assert check.checks_run["cpu"] == before + 2
    assert all(v.max_error < 1e-6 and v.cached is None for v in verdicts.values())
    for op in OPS:
        assert backend("cpu", op=op) == "cpp"
        assert "matches the reference" in reason("cpu", op=op) and "2nd derivatives" in reason("cpu", op=op)
    assert backend("cpu") == "cpp"
    stored = json.loads(fresh.read_text())
    (entry,) = stored.values()
    assert {op: entry[op]["ok"] for op in OPS} == {op: True for op in OPS}
    assert check.checks_run["cpu"] == before + 2  # asking again does not check again


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fault", ["perturb", "raise"])
def test_a_wrong_kernel_is_disabled_with_one_warning(fresh, monkeypatch, op, fault):
    monkeypatch.setitem(build._loaded, "cpu", Faulty(build._loaded["cpu"], op, fault))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert all(use_both_ops() for _ in range(3))  # the reference ran where the kernel is wrong
    (message,) = kernel_warnings(caught)
    assert f"cpu {op} kernel is disabled" in message and "reference" in message
    assert ("raised RuntimeError" if fault == "raise" else "differs from the reference") in message
    other = next(name for name in OPS if name != op)
    assert backend("cpu", op=op) == "ref" and backend("cpu", op=other) == "cpp"
    assert backend("cpu") == "mixed" and "failed its check" in reason("cpu", op=op)
    (entry,) = json.loads(fresh.read_text()).values()
    assert entry[op]["ok"] is False and entry[other]["ok"] is True


def test_a_wrong_second_derivative_is_caught(fresh, monkeypatch):
    """Forward and first derivative right, double backward zero: what R1 would silently train on."""
    monkeypatch.setattr(fused_act._FusedLeakyReLUBackward, "backward", staticmethod(lambda ctx, *grads: (None,) * 6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        verdict = check.verdict_for("fused_bias_act", "cpu")
    assert not verdict.ok and "second derivative" in verdict.reason
    assert len(kernel_warnings(caught)) == 1


def test_a_wrong_kernel_is_an_error_under_cpp(fresh, monkeypatch):
    monkeypatch.setitem(build._loaded, "cpu", Faulty(build._loaded["cpu"], "upfirdn2d", "perturb"))
    monkeypatch.setenv("STYLEFORGE_OPS", "cpp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(check.KernelCheckError, match="upfirdn2d kernel failed its check"):
            upfirdn2d(torch.randn(1, 1, 8, 8), torch.ones(2, 2) / 4)


def test_the_check_ignores_the_callers_context_and_rng(fresh):
    """First use may come inside no_grad, inference_mode or autocast, mid-training: the check
    still differentiates, and leaves the caller's random stream and thread count as they were."""
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_leaky_relu(torch.ones(2, 3), torch.zeros(3))
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads
    assert torch.equal(out, torch.full((2, 3), 2**0.5))
    assert check.verdict_for("fused_bias_act", "cpu").ok


# -------------------------------------------------------------------- across processes

CHILD = """
import json, sys, warnings
import torch
from styleforge.model.ops import backend, build, check, reason
from tests.test_ops_check import Faulty, kernel_warnings, use_both_ops

op, fault = sys.argv[1:3]
if fault != "none":
    build.extension("cpu")
    build._loaded["cpu"] = Faulty(build._loaded["cpu"], op, fault)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    matches = all(use_both_ops() for _ in range(3))
print(json.dumps({
    "matches_reference": matches, "checks_run": check.checks_run["cpu"], "warnings": kernel_warnings(caught),
    "backend": {name: backend("cpu", op=name) for name in check.ops()},
    "reason": {name: reason("cpu", op=name) for name in check.ops()},
}))
"""


@pytest.fixture
def cache(built, tmp_path):
    """A cache folder holding a copy of the built extension and no verdicts."""
    root = tmp_path / "cache"
    shutil.copytree(built, root / os.path.basename(built), ignore=shutil.ignore_patterns(f"{check.VERDICT_FILE}*", "*lock"))
    return root


def child(cache, op="upfirdn2d", fault="none"):
    env = {**os.environ, "STYLEFORGE_OPS": "auto", "STYLEFORGE_OPS_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, op, fault], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_reuses_the_verdict(cache):
    first = child(cache)
    assert first["checks_run"] == 2 and first["warnings"] == [] and first["matches_reference"]
    second = child(cache)
    assert second["checks_run"] == 0 and second["warnings"] == []
    assert second["backend"] == {op: "cpp" for op in OPS}
    assert all("verdict cached in" in text for text in second["reason"].values())


def test_a_failed_verdict_is_reused_with_one_warning(cache):
    first = child(cache, "fused_bias_act", "perturb")
    assert first["checks_run"] == 2 and len(first["warnings"]) == 1 and first["matches_reference"]
    # The kernel is fine in this process, but the stored verdict for this device and build says
    # otherwise: it is not checked again (doctor --recheck does that).
    second = child(cache)
    assert second["checks_run"] == 0 and second["matches_reference"]
    (message,) = second["warnings"]
    assert "fused_bias_act kernel is disabled" in message and "--recheck" in message
    assert second["backend"] == {"upfirdn2d": "cpp", "fused_bias_act": "ref"}
