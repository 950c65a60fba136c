"""`styleforge doctor`: the report names each op's backend and why, and times a short sample."""
import json

import pytest
import torch
from typer.testing import CliRunner

from styleforge.app.cli import app


def run(*args):
    return CliRunner().invoke(app, ["doctor", *args])


def test_json_report_with_a_short_sample(one_thread):
    result = run("--json", "--seconds", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["environment"]["torch"] == torch.__version__
    assert report["environment"]["cuda_available"] == torch.cuda.is_available()
    kernels = report["ops"]["cpu"]["kernels"]
    assert set(kernels) == {"upfirdn2d", "fused_bias_act"}
    for kernel in kernels.values():
        assert kernel["backend"] == "cpp" and kernel["check"]["ok"] and "matches the reference" in kernel["reason"]
    sample = report["throughput"]
    assert sample["device"] == "cpu" and sample["ops_backend"] == "cpp" and sample["model"]["size"] == 32
    for task in ("g_forward", "train_step"):
        assert sample[task]["images_per_s"] > 0 and sample[task]["calls"] >= 1 and sample[task]["measured"]
    assert "R1" in sample["train_step"]["measured"] and sample["peak_rss_gb"] > 0


def test_text_report_and_recheck():
    result = run("--seconds", "0", "--recheck")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for op in ("upfirdn2d", "fused_bias_act"):
        (line,) = [line for line in lines if line.strip().startswith(op)]
        # --recheck checked now: the reason carries no "verdict cached in"
        assert " cpp " in line and "matches the reference" in line and "cached" not in line
    assert "throughput: skipped (--seconds 0)" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    result = run("--device", "cuda")
    assert result.exit_code == 2 and "torch sees no CUDA device" in result.output
