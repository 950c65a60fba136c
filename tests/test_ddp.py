"""Data-parallel fine-tuning: torchrun, 2 CPU processes on gloo, the real finetune stage."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.test_finetune import finetune_params, make_base, make_dataset

REPO = Path(__file__).resolve().parents[1]

# Each rank runs tasks.finetune.run as `styleforge stage finetune` would, then dumps its own
# final networks so the test can compare ranks (only rank 0 writes the stage's outputs).
RANK_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from styleforge.model.train import Trainer
    from styleforge.core.config import EvaluateParams, FacesParams, FinetuneParams
    from styleforge.tasks import finetune

    root = Path(sys.argv[1])
    real_run = Trainer.run

    def run_and_dump(self):
        report = real_run(self)
        nets = {"g": self.g.state_dict(), "d": self.d.state_dict(), "g_ema": self.g_ema.state_dict()}
        torch.save(nets, root / f"rank{self.ranks.rank}.pt")
        return report

    Trainer.run = run_and_dump
    finetune.run(FinetuneParams(**json.loads(sys.argv[2])), EvaluateParams(), FacesParams(), root)
""")


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    make_base(tmp_path)
    make_dataset(tmp_path / "data/train")
    params = finetune_params(steps=4, checkpoint_every=2)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(tmp_path), params.model_dump_json()]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    delivered = torch.load(tmp_path / "data/finetune/model.pt", weights_only=True)
    base = torch.load(tmp_path / "data/base/model.pt", weights_only=True)
    for net in ("g", "d", "g_ema"):
        for name, tensor in rank0[net].items():
            assert torch.equal(tensor, rank1[net][name]), f"{net}.{name} differs between ranks"
            assert torch.equal(tensor, delivered[net][name])
    assert not torch.equal(rank0["d"]["final_linear.1.weight"], base["d"]["final_linear.1.weight"])
    assert (tmp_path / "reports/finetune.json").exists()
    assert '"ranks": 2' in (tmp_path / "reports/finetune.json").read_text()
