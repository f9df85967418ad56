"""train -> eval -> predict through the command line on a tiny configuration; bit-exact resumption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchsparse_lite.datasets.segmentation import SegmentationDataset

from torchsparse_lite.__main__ import main
from torchsparse_lite.train.checkpoint import load_checkpoint, load_model
from torchsparse_lite.train.data import SYNTHETIC_SCAN_KWARGS

TINY = ["--train-scans", "2", "--val-scans", "1", "--epochs", "2", "--batch-size", "1", "--cr", "0.125",
        "--voxel-size", "0.5", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_train_outputs(trained: Path) -> None:
    report = json.loads((trained / "report.json").read_text())
    for name in ("loss_curve.png", "class_iou.png", "prediction_topdown.png", "checkpoint_last.pt", "model.pt"):
        assert (trained / name).stat().st_size > 1000, name
    assert report["epochs_done"] == 2 and report["steps_done"] == 4
    assert len(report["history"]) == 2 and all("val_miou" in e for e in report["history"])
    h = report["heldout"]
    assert 0.0 <= h["miou"] <= 1.0 and 0.0 <= h["accuracy"] <= 1.0
    assert set(h["iou"]) == set(report["data"]["class_names"])
    assert report["parameters"] > 0 and report["macs_per_scan"] > 0
    ckpt = load_checkpoint(trained / "checkpoint_last.pt")
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4 and ckpt["optimizer"] is not None
    assert ckpt["model_config"]["cr"] == 0.125


def test_eval_matches_training_report(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = json.loads((trained / "report.json").read_text())
    assert main(["eval", "--checkpoint", str(trained / "model.pt"), "--out", str(tmp_path),
                 "--batch-size", "1", "--no-progress"]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["points"]["miou"] == pytest.approx(report["heldout"]["miou"], abs=1e-12)
    assert (tmp_path / "eval_class_iou.png").exists() and (tmp_path / "eval_topdown.png").exists()
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.parametrize("nuscenes", [False, True])
def test_predict_writes_labels(trained: Path, tmp_path: Path, nuscenes: bool) -> None:
    ds = SegmentationDataset.synthetic(1, seed=77, voxel_size=0.5, scan_kwargs=dict(SYNTHETIC_SCAN_KWARGS))
    points, _ = ds.load_scan(0)
    scan = tmp_path / "scan.bin"
    if nuscenes:
        ring = np.zeros((len(points), 1), np.float32)
        np.concatenate([points[:, :3], points[:, 3:4] * 255, ring], 1).astype("<f4").tofile(scan)
    else:
        points.astype("<f4").tofile(scan)
    ckpt = str(trained / "checkpoint_last.pt")
    flag = ["--nuscenes"] if nuscenes else []
    assert main(["predict", str(scan), "--checkpoint", ckpt, "--out", str(tmp_path / "p.label"),
                 "--render", str(tmp_path / "p.png"), *flag]) == 0
    labels = np.fromfile(tmp_path / "p.label", dtype="<u4")
    assert labels.shape == (len(points),) and labels.max() < 9
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["predict", str(scan), "--checkpoint", ckpt, "--out", str(tmp_path / "p.npy"), *flag]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), labels.astype(np.int64))
    # the same labels as the model applied through the dataset path (voxel means, inverse map)
    model, _ = load_model(ckpt)
    item = SegmentationDataset.synthetic(1, seed=77, voxel_size=0.5, scan_kwargs=dict(SYNTHETIC_SCAN_KWARGS))[0]
    from torchsparse_lite import SparseTensor  # noqa: PLC0415

    coords = torch.cat([torch.zeros_like(item["coords"][:, :1]), item["coords"]], 1)
    with torch.no_grad():
        ref = model(SparseTensor(item["feats"], coords)).argmax(1)[item["inverse"]].numpy()
    agree = (ref == labels).mean()
    assert agree > (0.99 if nuscenes else 1 - 1e-12)  # nuScenes path rescales intensity through float32 x255/255


def test_resume_is_bit_exact(trained: Path, tmp_path: Path) -> None:
    """1 epoch, stop, --resume for the 2nd: weights, optimizer state and losses equal the straight 2-epoch run."""
    straight, split = trained, tmp_path / "split"
    assert main(["train", *TINY, "--out", str(split), "--stop-after", "1"]) == 0
    assert load_checkpoint(split / "checkpoint_last.pt")["epoch"] == 1
    assert main(["train", *TINY, "--out", str(split), "--resume"]) == 0
    a, b = load_checkpoint(straight / "checkpoint_last.pt"), load_checkpoint(split / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["history"]["step_loss"] == b["history"]["step_loss"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_options(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--epochs"):
        main(["train", "--epochs", "0", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        main(["eval", "--checkpoint", str(tmp_path / "missing.pt")])
    wider = [("0.25" if a == "0.125" else a) for a in TINY]
    with pytest.raises(ValueError, match="--resume"):
        main(["train", *wider, "--out", str(tmp_path), "--resume", str(trained / "checkpoint_last.pt")])
