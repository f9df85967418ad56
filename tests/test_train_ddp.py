"""Data-parallel training: 2 gloo processes under torchrun on the CPU end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from torchsparse_lite.train.checkpoint import load_model
from torchsparse_lite.train.trainer import weights_digest


def test_two_process_gloo_identical_weights(tmp_path: Path) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        import pytest  # noqa: PLC0415

        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "torchsparse_lite", "train", "--out", str(out), "--device", "cpu", "--no-progress",
           "--train-scans", "4", "--val-scans", "2", "--epochs", "1", "--batch-size", "1",
           "--cr", "0.125", "--voxel-size", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    # 4 scans sharded over 2 ranks, batch 1: 2 steps per rank, and each rank saw different scans
    assert report["steps_done"] == 2
    digests = report["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and report["ranks_identical"]
    model, ckpt = load_model(out / "checkpoint_last.pt")
    assert weights_digest(model) == digests[0]
    assert ckpt["step"] == 2
    fresh = load_model(out / "checkpoint_last.pt")[0]
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
