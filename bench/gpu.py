"""The Python half of bench/gpu.sh: the stylegan2-ada-pytorch peer run, and bench/results/gpu.json.

    python bench/gpu.py peer --checkout PATH --out DIR/peer.json [--kimg 8] [--dry-run]
    python bench/gpu.py collect --dir DIR --out bench/results/gpu.json [--dry-run] [--peer-skipped WHY]

peer: NVIDIA's own training loop on the same GPU and setting as bench/train.py's GPU case
(256x256, --cfg=stylegan2 i.e. config F, --gpus=1 --batch=16, fixed augmentation p = 0.2 like
ours, no metrics so nothing is downloaded), on a synthetic dataset zip made here. Its tick lines
give sec/kimg and peak GPU memory; tick 0 is the first batch (start-up and plugin builds) and
is left out. Its start-up warnings about custom ops falling back to slow paths are kept: they
change its speed. --dry-run makes a tiny dataset and prints the command instead of running it.

collect: every step's exit status, duration and figures in one JSON, with the ratio of NVIDIA's
sec/kimg to ours measured in the same run. Imports no torch, so it runs anywhere.
"""

import argparse
import io
import json
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from datetime import datetime, timezone
from pathlib import Path

# tick 1     kimg 4.0      time 1m 02s       sec/tick 50.2    sec/kimg 12.55   maintenance 0.1 ... gpumem 4.01 ...
TICK = re.compile(r"^tick\s+(\d+)\s+kimg\s+([\d.]+)\s.*?sec/kimg\s+([\d.]+)\s.*?gpumem\s+([\d.]+)", re.M)
# What stylegan2-ada-pytorch prints when a fast path is unavailable on this torch/CUDA.
FALLBACK = re.compile(r"^.*(?:Falling back|Failed to build|not supported on PyTorch).*$", re.M)
PUBLISHED = {  # ../shared/REFERENCE.md: NVIDIA's stylegan3 configs table, StyleGAN2 at 256x256, batch 16
    "source": "NVlabs stylegan3 configs table (not measured here)",
    "a100_sec_per_kimg": 12.53, "v100_sec_per_kimg": 20.84, "gpu_mem_gb": 4.5,
}


def make_dataset(path: Path, count: int, size: int) -> Path:
    """count smooth random RGB PNGs, size x size, in a zip as ImageFolderDataset reads them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for index in range(count):
            coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            buffer = io.BytesIO()
            coarse.resize((size, size), Image.BICUBIC).save(buffer, "PNG")
            archive.writestr(f"img{index:05d}.png", buffer.getvalue())
    return path


def peer_command(checkout: Path, data: Path, run_dir: Path, kimg: int) -> list[str]:
    return [sys.executable, str(checkout / "train.py"), f"--outdir={run_dir}", f"--data={data}", "--gpus=1",
            "--cfg=stylegan2", "--batch=16", f"--kimg={kimg}", "--aug=fixed", "--p=0.2", "--metrics=none",
            "--seed=0"]


def parse_ticks(log: str) -> dict:
    """sec/kimg (median over ticks after tick 0) and peak GPU memory from NVIDIA's tick lines."""
    ticks = [{"tick": int(t), "kimg": float(k), "sec_per_kimg": float(s), "gpumem_gb": float(m)}
             for t, k, s, m in TICK.findall(log)]
    timed = [tick for tick in ticks if tick["tick"] >= 1]
    return {
        "ticks": ticks,
        "sec_per_kimg": statistics.median(t["sec_per_kimg"] for t in timed) if timed else None,
        "peak_gpu_mem_gb": max((t["gpumem_gb"] for t in ticks), default=None),
        "fallbacks": sorted({line.strip() for line in FALLBACK.findall(log) if line.strip()}),
    }


def peer(args) -> int:
    checkout = args.checkout.resolve()
    if not (checkout / "train.py").is_file() or not (checkout / "training/training_loop.py").is_file():
        print(f"{checkout}: not a stylegan2-ada-pytorch checkout (no train.py, training/training_loop.py)")
        return 2
    result = {"checkout": str(checkout), "kimg": args.kimg, "dry_run": args.dry_run,
              "setting": "256x256 --cfg=stylegan2 (config F, mixed precision on the 4 highest resolutions), "
                         "--gpus=1 --batch=16, --aug=fixed --p=0.2, --metrics=none"}
    with tempfile.TemporaryDirectory() as tmp:  # the run's snapshots are hundreds of MB: not kept
        # The dry run makes a tiny dataset: the code path, not a usable one.
        count, size = (4, 32) if args.dry_run else (64, 256)
        data = make_dataset(Path(tmp) / "data.zip", count, size)
        command = peer_command(checkout, data, Path(tmp) / "runs", args.kimg)
        result["command"] = shlex.join(command)
        if args.dry_run:
            print(f"dry run, GPU only: would run in {checkout}:\n  {result['command']}")
            _write(args.out, result)
            return 0
        log_path = args.out.with_name("nvidia_train.log")  # peer.log is the step's own output
        started = time.perf_counter()
        with open(log_path, "w") as log:
            try:
                done = subprocess.run(command, cwd=checkout, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=args.timeout)
                result["exit"] = done.returncode
            except subprocess.TimeoutExpired:
                result["exit"] = f"timed out after {args.timeout} s"
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = log_path.read_text(errors="replace")
    result.update(parse_ticks(text))
    result["log"] = str(log_path)
    if result["exit"] != 0:
        result["log_tail"] = text.strip().splitlines()[-20:]
    print(json.dumps({k: v for k, v in result.items() if k != "ticks"}, indent=2))
    _write(args.out, result)
    return 0 if result["sec_per_kimg"] else 1


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tests(path: Path):
    """Counts from pytest's JUnit XML."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def collect(args) -> int:
    folder = args.dir
    steps = []
    for line in (folder / "steps.tsv").read_text().splitlines() if (folder / "steps.tsv").exists() else []:
        name, code, seconds, command = line.split("\t", 3)
        steps.append({"step": name, "exit": int(code), "seconds": int(seconds), "command": command,
                      "log": str(folder / f"{name}.log")})
    doctor = _load(folder / "doctor.json")
    train = _load(folder / "train.json")
    ops = _load(folder / "ops.json")
    nvidia = _load(folder / "peer.json") if not args.peer_skipped else {"skipped": args.peer_skipped}
    ours = {}
    for row in (train or {}).get("results", []):
        key = f"{row['mode']}_{'bf16' if row['bf16'] else 'fp32'}"
        ours[key] = {k: row.get(k) for k in ("sec_per_kimg", "images_per_s", "peak_gpu_mem_gb", "peak_gpu_reserved_gb",
                                              "peak_rss_gb", "backend")}
    comparison = None
    if nvidia and nvidia.get("sec_per_kimg"):
        comparison = {
            "nvidia_sec_per_kimg": nvidia["sec_per_kimg"],
            "nvidia_peak_gpu_mem_gb": nvidia.get("peak_gpu_mem_gb"),
            # > 1: NVIDIA's loop takes longer per kimg than ours
            **{f"nvidia_over_{key}": round(nvidia["sec_per_kimg"] / row["sec_per_kimg"], 3)
               for key, row in ours.items() if row.get("sec_per_kimg")},
            "note": "NVIDIA runs fp16 on its 4 highest resolutions, closest to our bf16 row",
        }
    report = {
        "dry_run": args.dry_run,
        "note": "dry run: tiny CPU stand-ins for every step; no figure here is a GPU figure" if args.dry_run else None,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "environment": (doctor or {}).get("environment"),
        "steps": steps,
        "kernels": {device: {op: {"backend": k["backend"], "reason": k["reason"]} for op, k in entry["kernels"].items()}
                    for device, entry in (doctor or {}).get("ops", {}).items() if "kernels" in entry},
        "doctor_throughput": (doctor or {}).get("throughput"),
        "op_tests": _tests(folder / "op_tests.xml"),
        "ops_bench": ops and {"device": ops["device"], "batch": ops["batch"], "summary": ops["summary"]},
        "train": train and {"device": train["device"], "gpu": train["gpu"], "measure": train["measure"], "results": ours,
                            "speedup_cpp_over_ref": train["speedup_cpp_over_ref"]},
        "nvidia": nvidia and {k: v for k, v in nvidia.items() if k != "ticks"},
        "comparison": comparison,
        "published": PUBLISHED,
    }
    _write(args.out, report)
    failed = [s["step"] for s in steps if s["exit"] != 0]
    print(f"wrote {args.out}{' (dry run)' if args.dry_run else ''}: {len(steps)} steps, "
          f"{'failed: ' + ', '.join(failed) if failed else 'all passed'}")
    for key, row in ours.items():
        print(f"  ours {key}: {row['sec_per_kimg']} s/kimg, peak {row.get('peak_gpu_mem_gb') or row.get('peak_rss_gb')} GB")
    print(f"  NVIDIA: {comparison['nvidia_sec_per_kimg']} s/kimg" if comparison else
          f"  NVIDIA: {(nvidia or {}).get('skipped') or 'no figure (see the peer step)'}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("peer", help="run stylegan2-ada-pytorch's train.py and parse its ticks")
    run.add_argument("--checkout", type=Path, required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--kimg", type=int, default=8, help="length: ticks come every 4 kimg, tick 0 is not timed")
    run.add_argument("--timeout", type=int, default=1200)
    run.add_argument("--dry-run", action="store_true")
    gather = sub.add_parser("collect", help="gather the steps' results into one JSON")
    gather.add_argument("--dir", type=Path, required=True)
    gather.add_argument("--out", type=Path, required=True)
    gather.add_argument("--dry-run", action="store_true")
    gather.add_argument("--peer-skipped", help="why the NVIDIA row is missing")
    args = parser.parse_args()
    return peer(args) if args.command == "peer" else collect(args)


if __name__ == "__main__":
    sys.exit(main())
