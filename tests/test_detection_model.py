"""Detector shapes and gradients, overfitting the real KITTI frame, and the ``detect`` command end to end."""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from conftest import data_file

from torchsparse_lite.__main__ import main
from torchsparse_lite.detection import CenterPointDetector, DetectorConfig, evaluate_detector, train_detector
from torchsparse_lite.detection.data import file_sample, toy_sample

SMALL = dict(widths=(4, 8, 16, 16), out_channels=16, neck_channels=16, head_channels=16)


def test_forward_shapes_and_gradients(one_thread):
    cfg = DetectorConfig(point_range=(-19.2, -19.2, -3.0, 19.2, 19.2, 1.0), voxel_size=(0.3, 0.3, 0.25), **SMALL)
    model = CenterPointDetector(cfg)
    scenes = [toy_sample(1), toy_sample(2)]
    pts = [torch.from_numpy(s.points) for s in scenes]
    x = model.voxelize(pts)
    feats = model.backbone(x)
    assert feats.stride == (8, 8, 16)
    assert all(int(feats.coords[:, i + 1].max()) < n for i, n in enumerate(cfg.sparse_out_range))
    outs = model(x, batch_size=2)
    assert len(outs) == len(cfg.class_groups)
    for out, group in zip(outs, cfg.class_groups):
        assert out["heatmap"].shape == (2, len(group), *cfg.feature_size)
        assert out["rot"].shape == (2, 2, *cfg.feature_size) and out["dim"].shape[1] == 3
    loss, parts = model.loss(
        x, [torch.from_numpy(s.boxes) for s in scenes], [torch.from_numpy(s.labels) for s in scenes]
    )
    loss.backward()
    assert torch.isfinite(loss) and parts["heatmap"] > 0 and parts["regression"] > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    model.eval()
    dets = model.predict(pts)
    assert len(dets) == 2 and all(d.shape[1] == 9 for d in dets)


def test_overfit_real_kitti_frame(one_thread):
    """Overfit the detector to KITTI frame 000008 (6 cars): car BEV AP@0.5 must reach 0.9."""
    sample = file_sample(str(data_file("kitti/000008.bin")), str(data_file("kitti/000008_boxes.json")))
    cfg = DetectorConfig(
        classes=("car",),
        class_groups=((0,),),
        circle_radius=(2.0,),
        point_range=(0.0, -12.8, -3.0, 38.4, 6.4, 1.0),  # crop to the boxes' region
        voxel_size=(0.16, 0.16, 0.2),
        widths=(8, 16, 32, 32),
        out_channels=32,
        neck_channels=32,
        head_channels=32,
    )
    torch.manual_seed(0)
    model = CenterPointDetector(cfg)
    t0 = time.perf_counter()
    result = train_detector(model, [sample], epochs=40, lr=3e-3, progress=False)
    metrics, dets = evaluate_detector(model, [sample], progress=False)
    ap = metrics["ap"]["car"]
    print(f"overfit 000008: {result['steps']} steps, {time.perf_counter() - t0:.1f} s, car AP {ap}")
    assert ap["bev@0.5"] >= 0.9
    assert ap["3d@0.5"] >= 0.5
    assert dets[0].shape[0] >= 6


def test_detect_cli_train_eval_predict_resume(tmp_path, one_thread):
    out = tmp_path / "run"
    common = ["--data", "toy", "--val-scenes", "1", "--no-progress", "--threads", "1"]
    geo = ["--range", "-19.2", "-19.2", "-3", "19.2", "19.2", "1", "--voxel-size", "0.3", "0.3", "0.25", "--width", "4"]
    rc = main(["detect", "train", "--out", str(out), "--train-scenes", "2", "--epochs", "1", *common, *geo])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["epochs_done"] == 1
    assert set(report["eval"]["ap"]["car"]) >= {"bev@0.7", "3d@0.7", "bev@0.5", "3d@0.5"}
    assert (out / "bev.png").stat().st_size > 1000 and (out / "loss.png").is_file()
    # resume: one more epoch on top of the checkpoint
    rc = main(["detect", "train", "--out", str(out), "--train-scenes", "2", "--epochs", "2", "--resume", *common, *geo])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 4 and report["epochs_done"] == 2
    assert main(["detect", "eval", "--checkpoint", str(out / "checkpoint.pt"), *common]) == 0
    assert "ap" in json.loads((out / "eval.json").read_text())["eval"]
    scan = tmp_path / "scan.bin"
    toy_sample(5).points.astype(np.float32).tofile(scan)
    pred = tmp_path / "pred"
    args = ["detect", "predict", "--checkpoint", str(out / "checkpoint.pt"), "--scan", str(scan), "--out", str(pred)]
    assert main([*args, "--score-threshold", "0.0"]) == 0
    boxes = json.loads((pred / "predictions.json").read_text())["boxes"]
    assert boxes and set(boxes[0]) == {"center_xyz", "size_lwh", "yaw", "score", "class"}
    assert (pred / "bev.png").is_file()
