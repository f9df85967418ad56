"""Overfitting the real SemanticKITTI scan (../shared/data) reaches >= 90 % point accuracy (skips when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_file

from torchsparse_lite.__main__ import main


@pytest.mark.slow
def test_overfit_semantickitti_scan(tmp_path: Path) -> None:
    scan = data_file("semantickitti/000000.bin")
    data_file("semantickitti/000000.label")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "overfit"
        assert main(["train", "--data", str(scan.parent), "--out", str(out), "--voxel-size", "0.2",
                     "--cr", "0.25", "--epochs", "80", "--batch-size", "1", "--lr", "1e-2", "--class-weights", "none",
                     "--eval-every", "1000", "--no-progress"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert report["data"]["source"]["train_scans"] == 1
        acc = report["heldout"]["accuracy"]
        assert acc >= 0.90, f"point accuracy {acc:.4f} after {report['steps_done']} steps"
        # predict writes SemanticKITTI raw ids and scores the same accuracy against the .label file
        label = tmp_path / "000000.label"
        assert main(["predict", str(scan), "--checkpoint", str(out / "checkpoint_last.pt"), "--out", str(label),
                     "--labels", str(scan.with_suffix(".label"))]) == 0
        raw = np.fromfile(label, dtype="<u4")
        assert raw.shape == (123389,) and set(np.unique(raw).tolist()) <= {10, 11, 15, 18, 20, 30, 31, 32, 40, 44,
                                                                           48, 49, 50, 51, 70, 71, 72, 80, 81}
        scored = json.loads(label.with_suffix(".json").read_text())
        assert scored["accuracy"] == pytest.approx(acc, abs=1e-9)
    finally:
        torch.set_num_threads(n)
