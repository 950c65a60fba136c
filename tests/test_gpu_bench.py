"""bench/gpu.sh and its Python half bench/gpu.py, on the CPU: the dry run goes through every
step and writes the JSON; the NVIDIA peer's command, tick parsing and the ratio are checked on
a stand-in checkout and on log lines in the format stylegan2-ada-pytorch prints."""
import json
import subprocess
import sys

from tests.conftest import REPO

# As training/training_loop.py formats them (tick 0 covers start-up and the first batch).
NVIDIA_LOG = """\
Setting up PyTorch plugin "upfirdn2d_plugin"... Failed!
UserWarning: conv2d_gradfix not supported on PyTorch 2.11.0. Falling back to torch.nn.functional.conv2d().
tick 0     kimg 0.0      time 41s          sec/tick 9.9     sec/kimg 620.16  maintenance 31.4   cpumem 4.12   gpumem 3.71   augment 0.200
tick 1     kimg 4.0      time 1m 34s       sec/tick 51.8    sec/kimg 12.95   maintenance 0.0    cpumem 4.15   gpumem 4.38   augment 0.200
tick 2     kimg 8.0      time 2m 25s       sec/tick 50.6    sec/kimg 12.65   maintenance 0.1    cpumem 4.15   gpumem 4.40   augment 0.200
"""


def test_dry_run_goes_through_every_step(tmp_path):
    done = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "peer: skipped: no --peer-nvidia PATH" in done.stdout
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["dry_run"] is True and "no figure here is a GPU figure" in report["note"]
    assert [(s["step"], s["exit"]) for s in report["steps"]] == [("doctor", 0), ("op_tests", 0), ("ops", 0), ("train", 0)]
    assert {op: k["backend"] for op, k in report["kernels"]["cpu"].items()} == {"upfirdn2d": "cpp", "fused_bias_act": "cpp"}
    assert report["op_tests"]["passed"] > 0 and report["op_tests"]["failures"] == report["op_tests"]["errors"] == 0
    assert set(report["ops_bench"]["summary"]) == {"upfirdn2d", "fused_bias_act"}
    assert {key: row["sec_per_kimg"] > 0 for key, row in report["train"]["results"].items()} == {
        "ref_fp32": True, "cpp_fp32": True}
    assert report["nvidia"] == {"skipped": "no --peer-nvidia PATH given"} and report["comparison"] is None


def checkout_printing(tmp_path, log):
    """A stand-in stylegan2-ada-pytorch checkout whose train.py records its arguments and prints log."""
    checkout = tmp_path / "stylegan2-ada-pytorch"
    (checkout / "training").mkdir(parents=True)
    (checkout / "training/training_loop.py").touch()
    (checkout / "train.py").write_text(
        f"import json, sys\njson.dump(sys.argv[1:], open({str(tmp_path / 'argv.json')!r}, 'w'))\nprint({log!r})\n")
    return checkout


def peer(*args):
    return subprocess.run([sys.executable, "bench/gpu.py", "peer", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_peer_dry_run_prints_nvidias_command(tmp_path):
    done = peer("--checkout", checkout_printing(tmp_path, ""), "--out", tmp_path / "peer.json", "--dry-run")
    assert done.returncode == 0 and "would run" in done.stdout, done.stderr
    assert not (tmp_path / "argv.json").exists()
    command = json.loads((tmp_path / "peer.json").read_text())["command"]
    for flag in ("--cfg=stylegan2", "--gpus=1", "--batch=16", "--kimg=8", "--aug=fixed", "--p=0.2", "--metrics=none"):
        assert flag in command


def test_peer_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    done = peer("--checkout", tmp_path, "--out", tmp_path / "peer.json")
    assert done.returncode == 2 and "not a stylegan2-ada-pytorch checkout" in done.stdout


def test_peer_run_parsed_and_compared_with_ours(tmp_path):
    done = peer("--checkout", checkout_printing(tmp_path, NVIDIA_LOG), "--out", tmp_path / "peer.json", "--kimg", 12)
    assert done.returncode == 0, done.stdout + done.stderr
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert "--kimg=12" in argv and any(a.startswith("--data=") and a.endswith(".zip") for a in argv)
    result = json.loads((tmp_path / "peer.json").read_text())
    assert [t["tick"] for t in result["ticks"]] == [0, 1, 2]
    assert result["sec_per_kimg"] == 12.8  # median of ticks 1 and 2; tick 0 is start-up
    assert result["peak_gpu_mem_gb"] == 4.40 and result["exit"] == 0
    assert len(result["fallbacks"]) == 1 and "conv2d_gradfix" in result["fallbacks"][0]

    rows = [{"mode": "cpp", "bf16": bf16, "sec_per_kimg": seconds, "images_per_s": 1000 / seconds,
             "peak_gpu_mem_gb": 5.0, "backend": "cuda"} for bf16, seconds in ((False, 16.0), (True, 10.0))]
    (tmp_path / "train.json").write_text(json.dumps({"device": "cuda", "gpu": "H200", "measure": "m", "results": rows,
                                                     "speedup_cpp_over_ref": {}}))
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "bench/gpu.py", "collect", "--dir", str(tmp_path), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    comparison = json.loads(out.read_text())["comparison"]
    assert comparison["nvidia_over_cpp_fp32"] == 0.8 and comparison["nvidia_over_cpp_bf16"] == 1.28
