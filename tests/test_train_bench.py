"""bench/train.py on tiny settings: the ref/cpp rows and the JSON shape, the side-by-side row's
skip without --peer-rosinality, its refusal of a folder that is not a checkout, and the 16-step
cycle arithmetic. No test needs a rosinality checkout."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def bench(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "bench/train.py", "--device", "cpu", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def train_bench():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "bench/train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_peer_the_row_says_skipped(tmp_path):
    out = tmp_path / "train.json"
    done = bench("--config", "tiny", "--size", "16", "--batch", "4", "--steps", "16", "--rounds", "1",
                 "--peer-size", "16", "--peer-batch", "2", "--peer-steps", "16", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["rosinality"] == {"skipped": "no --peer-rosinality PATH given"}
    assert "profile" not in report
    assert report["device"] == "cpu" and report["speedup_clock"] == "cpu_seconds"
    assert [(r["mode"], r["steps"], r["batch"]) for r in report["results"]] == [("ref", 16, 4), ("cpp", 16, 4)]
    assert all(r["sec_per_kimg"] > 0 and r["images_per_s"] > 0 for r in report["results"])
    assert set(report["speedup_cpp_over_ref"]) == {"fp32"}


def test_peer_only_without_a_peer_runs_nothing(tmp_path):
    out = tmp_path / "train.json"
    done = bench("--peer-only", "--out", out, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["results"] == [] and report["rosinality"]["skipped"] == "no --peer-rosinality PATH given"


def test_a_folder_that_is_not_a_checkout_is_refused(tmp_path):
    done = bench("--peer-only", "--peer-rosinality", tmp_path, "--out", tmp_path / "train.json", timeout=60)
    assert done.returncode != 0 and "not a stylegan2-pytorch checkout" in done.stderr
    assert not (tmp_path / "train.json").exists()


def test_cycle_weighs_the_step_kinds_in_their_true_proportion(train_bench):
    assert [train_bench.step_kind(i) for i in (0, 1, 4, 15, 16)] == ["r1+pl", "plain", "pl", "plain", "r1+pl"]
    records = [{"kind": train_bench.step_kind(i), "s": 0.0, "cpu_s": {0: 10.0, 4: 4.0}.get(i, 1.0)} for i in range(5)]
    assert train_bench.cycle(records, "cpu_s") == 10 + 3 * 4 + 12 * 1
    # sixteen steps from an R1 step: the cycle is the measured total
    sixteen = [{"kind": train_bench.step_kind(i), "s": 0.0, "cpu_s": 1.0 + i} for i in range(16)]
    assert train_bench.cycle(sixteen, "cpu_s") == pytest.approx(sum(r["cpu_s"] for r in sixteen))
    assert train_bench.cycle(records[:4], "cpu_s") is None  # no path-length step timed
    shares = train_bench.phase_shares(records)
    # a cycle of 34 s: 16 x 1 s of D/G main, 4 x (4 - 1) s of path length, (10 - 4) s of R1
    assert (shares["d_g_main_ema"], shares["path_length"], shares["r1"]) == pytest.approx((16 / 34, 12 / 34, 6 / 34),
                                                                                           abs=1e-3)
