"""One checkpoint format: a pruned checkpoint loads in eval, predict, train --resume, detect eval/predict, prune.

A tiny segmentation model is trained through the ``train`` command and pruned
through ``prune``; a tiny detector is trained through ``detect train`` and its
backbone pruned through the pruning API. Every consumer command then runs on the
pruned file, which holds no pickled module: the network is rebuilt from its
config, reshaped by the recorded structure, and must reproduce the in-memory
pruned network exactly. Files of the earlier layouts still load; bad files fail
with a ValueError that names the problem.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torchsparse_lite.datasets.segmentation import SegmentationDataset

from torchsparse_lite import SparseTensor
from torchsparse_lite.__main__ import main
from torchsparse_lite.detection import evaluate_detector, load_detector
from torchsparse_lite.detection.data import filter_boxes, make_samples, toy_sample
from torchsparse_lite.detection.engine import save_checkpoint as save_detector
from torchsparse_lite.models import MinkUNet, count_parameters
from torchsparse_lite.prune import channel_shapes, pipeline, prune_model
from torchsparse_lite.train.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    V1_FORMAT,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from torchsparse_lite.train.data import SYNTHETIC_SCAN_KWARGS, eval_loader, synthetic_split
from torchsparse_lite.train.distributed import DistContext
from torchsparse_lite.train.engine import evaluate
from torchsparse_lite.train.metrics import summarize
from torchsparse_lite.train.trainer import warmup_cosine

TINY = ["--train-scans", "2", "--val-scans", "1", "--batch-size", "1", "--cr", "0.125", "--voxel-size", "0.5",
        "--no-progress", "--seed", "3"]  # fmt: skip
PRUNE = {"criterion": "l1", "ratio": 0.5, "finetune_steps": 1, "latency_repeats": 1,
         "data": {"train_scans": 1, "val_scans": 1, "max_points": 1000}}  # fmt: skip
DET = ["--data", "toy", "--val-scenes", "1", "--no-progress", "--threads", "1"]
DET_GEO = ["--range", "-19.2", "-19.2", "-3", "19.2", "19.2", "1", "--voxel-size", "0.3", "0.3", "0.25",
           "--width", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One epoch (2 steps) of ``train``, then ``prune`` of its model.pt; keeps the CLI's in-memory pruned network."""
    root = tmp_path_factory.mktemp("seg")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(root / "run")]) == 0
    (root / "prune.json").write_text(json.dumps(PRUNE))
    kept, real = {}, pipeline.run_pipeline

    def keep_model(*args, **kwargs) -> dict:
        report = real(*args, **kwargs)
        kept["model"] = report["model"]
        return report

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "run_pipeline", keep_model)
        assert main(["prune", "--checkpoint", str(root / "run" / "model.pt"), "--config", str(root / "prune.json"),
                     "--out", str(root / "prune"), "--no-progress"]) == 0  # fmt: skip
    return SimpleNamespace(run=root / "run", pruned=root / "prune" / "pruned.pt", cfg=root / "prune.json",
                           model=kept["model"].eval())  # fmt: skip


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One step of ``detect train``; its backbone pruned by half (pruning API) and saved by the detection writer."""
    root = tmp_path_factory.mktemp("det")
    assert main(["detect", "train", "--out", str(root / "run"), "--train-scenes", "1", "--epochs", "1", *DET,
                 *DET_GEO]) == 0  # fmt: skip
    model, ckpt = load_detector(root / "run" / "checkpoint.pt")
    x = model.voxelize([torch.from_numpy(toy_sample(1).points)])
    model.backbone = prune_model(model.backbone, x, "l1", 0.5)[0].model
    state = {k: ckpt[k] for k in ("epoch", "step", "history", "elapsed", "cpu")}
    save_detector(root / "pruned.pt", model.eval(), None, state)
    return SimpleNamespace(run=root / "run", pruned=root / "pruned.pt", model=model)


def _scan(seed: int = 77) -> dict:
    """A voxelised synthetic scan of the training sensor at the training voxel size."""
    return SegmentationDataset.synthetic(1, seed=seed, voxel_size=0.5, scan_kwargs=dict(SYNTHETIC_SCAN_KWARGS))[0]


def _input(item: dict) -> SparseTensor:
    return SparseTensor(item["feats"], torch.cat([torch.zeros_like(item["coords"][:, :1]), item["coords"]], 1))


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    x = _input(_scan())
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_pruned_file_records_the_format(seg: SimpleNamespace) -> None:
    raw = torch.load(seg.pruned, weights_only=True)  # plain data: no pickled module, no class needed
    assert (raw["format"], raw["version"], raw["task"]) == (FORMAT, FORMAT_VERSION, "segmentation")
    source = load_checkpoint(seg.run / "model.pt")
    assert raw["model_config"] == source["model_config"] and raw["data"] == source["data"]
    assert (raw["epoch"], raw["step"]) == (1, 2) == (source["epoch"], source["step"])
    assert raw["structure"] == {"channel_shapes": channel_shapes(seg.model)}
    assert raw["pruned_from"] == str(seg.run / "model.pt") and raw["prune_config"]["ratio"] == 0.5
    assert "optimizer" not in raw and "rng" not in raw


def test_loaded_pruned_model_is_the_pruned_network(seg: SimpleNamespace) -> None:
    model, ckpt = load_model(seg.pruned)
    unpruned, _ = load_model(seg.run / "model.pt")
    assert channel_shapes(model) == channel_shapes(seg.model) != channel_shapes(unpruned)
    assert count_parameters(model) == count_parameters(seg.model) < count_parameters(unpruned) // 2
    _same_outputs(model, seg.model)


def test_eval_on_pruned(seg: SimpleNamespace, tmp_path: Path) -> None:
    assert main(["eval", "--checkpoint", str(seg.pruned), "--out", str(tmp_path), "--batch-size", "1",
                 "--no-progress"]) == 0  # fmt: skip
    ev = json.loads((tmp_path / "eval.json").read_text())
    src = load_checkpoint(seg.pruned)["data"]["source"]
    assert ev["data"] == {"kind": "synthetic", "seed": src["val_seed"], "scans": 1} and ev["voxel_size"] == 0.5
    ds = synthetic_split(1, src["val_seed"], 0.5)  # the in-memory pruned network, scored the same way
    cm, _, _ = evaluate(seg.model, eval_loader(ds, 1, DistContext()), ds.num_classes, DistContext(), progress=False)
    assert ev["points"]["miou"] == summarize(cm, ds.class_names)["miou"]


def test_predict_on_pruned(seg: SimpleNamespace, tmp_path: Path) -> None:
    points, _ = SegmentationDataset.synthetic(1, seed=77, voxel_size=0.5,
                                              scan_kwargs=dict(SYNTHETIC_SCAN_KWARGS)).load_scan(0)  # fmt: skip
    points.astype("<f4").tofile(tmp_path / "scan.bin")
    out = tmp_path / "p.npy"
    assert main(["predict", str(tmp_path / "scan.bin"), "--checkpoint", str(seg.pruned), "--out", str(out)]) == 0
    item = _scan()
    with torch.no_grad():
        ref = seg.model(_input(item)).argmax(1)[item["inverse"]].numpy()
    np.testing.assert_array_equal(np.load(out), ref)


def test_train_resumes_a_pruned_checkpoint(seg: SimpleNamespace, tmp_path: Path) -> None:
    """Epoch 2 on top of the pruned epoch-1 file: same shapes, step and LR schedule continue, fresh optimizer."""
    out = tmp_path / "ft"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(out), "--resume", str(seg.pruned)]) == 0
    ck = load_checkpoint(out / "checkpoint_last.pt")
    assert (ck["epoch"], ck["step"]) == (2, 4)
    assert [(e["epoch"], e["step"]) for e in ck["history"]["epochs"]] == [(2, 4)]
    assert ck["history"]["epochs"][0]["lr"] == pytest.approx(4e-3 * warmup_cosine(4)(4))  # schedule at step 4
    assert ck["structure"]["channel_shapes"] == channel_shapes(seg.model)
    before = seg.model.state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in ck["state_dict"].items())  # it trained
    report = json.loads((out / "report.json").read_text())
    assert report["parameters"] == count_parameters(seg.model) and report["epochs_done"] == 2
    assert channel_shapes(load_model(out / "model.pt")[0]) == channel_shapes(seg.model)


def test_prune_again(seg: SimpleNamespace, tmp_path: Path) -> None:
    assert main(["prune", "--checkpoint", str(seg.pruned), "--config", str(seg.cfg), "--out", str(tmp_path),
                 "--no-progress"]) == 0  # fmt: skip
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["before"]["parameters"] == count_parameters(seg.model) > rep["after"]["parameters"]
    model, again = load_model(tmp_path / "pruned.pt")
    assert count_parameters(model) == rep["after"]["parameters"]
    first = load_checkpoint(seg.pruned)
    assert again["data"] == first["data"] and (again["epoch"], again["step"]) == (1, 2)


def _nan_equal(a: object, b: object) -> bool:
    """Equality of nested metric dicts where NaN (json: null) equals NaN."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    nan_a = a is None or (isinstance(a, float) and math.isnan(a))
    nan_b = b is None or (isinstance(b, float) and math.isnan(b))
    return nan_a == nan_b and (nan_a or a == b)


def test_detect_eval_predict_on_pruned(det: SimpleNamespace, tmp_path: Path) -> None:
    model, ckpt = load_detector(det.pruned)
    assert ckpt["task"] == "detection" and channel_shapes(model) == channel_shapes(det.model)
    assert count_parameters(model.backbone) < count_parameters(load_detector(det.run / "checkpoint.pt")[0].backbone)
    assert main(["detect", "eval", "--checkpoint", str(det.pruned), "--out", str(tmp_path), *DET]) == 0
    samples = [filter_boxes(s, model.cfg.point_range, 5) for s in make_samples("toy", [100000], progress=False)]
    want, _ = evaluate_detector(det.model, samples, progress=False)
    assert _nan_equal(json.loads((tmp_path / "eval.json").read_text())["eval"]["ap"], want["ap"])
    scan = tmp_path / "scan.bin"
    toy_sample(5).points.astype(np.float32).tofile(scan)
    pred = tmp_path / "pred"
    assert main(["detect", "predict", "--checkpoint", str(det.pruned), "--scan", str(scan), "--out", str(pred),
                 "--score-threshold", "0.0"]) == 0  # fmt: skip
    boxes = json.loads((pred / "predictions.json").read_text())["boxes"]
    ref = dataclasses.replace(det.model.cfg, score_threshold=0.0)
    det.model.cfg, saved = ref, det.model.cfg
    try:
        dets = det.model.predict([torch.from_numpy(toy_sample(5).points)])[0].to(torch.float64)
    finally:
        det.model.cfg = saved
    assert boxes and [b["score"] for b in boxes] == [float(d[7]) for d in dets]


def test_detect_train_resumes_a_pruned_checkpoint(det: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(det.pruned.read_bytes())
    assert main(["detect", "train", "--out", str(out), "--train-scenes", "1", "--epochs", "2", "--resume", *DET,
                 *DET_GEO]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert (report["epochs_done"], report["steps"]) == (2, 2)
    assert report["parameters"] == count_parameters(det.model)
    assert channel_shapes(load_detector(out / "checkpoint.pt")[0]) == channel_shapes(det.model)


def test_earlier_layouts_still_load(seg: SimpleNamespace, det: SimpleNamespace, tmp_path: Path) -> None:
    """Version-1 segmentation files, untagged pruned files and detector checkpoints, whole pickled modules."""
    v2 = load_checkpoint(seg.run / "model.pt")
    v1 = {k: v for k, v in v2.items() if k not in ("format", "version", "task", "structure")}
    torch.save({**v1, "format": V1_FORMAT}, tmp_path / "v1.pt")
    model, ckpt = load_model(tmp_path / "v1.pt")
    assert (ckpt["version"], ckpt["task"], ckpt["data"]) == (1, "segmentation", v2["data"])
    _same_outputs(model, load_model(seg.run / "model.pt")[0])
    old_pruned = {"state_dict": seg.model.state_dict(), "channel_shapes": channel_shapes(seg.model),
                  "config": seg.model.config()}  # fmt: skip
    torch.save(old_pruned, tmp_path / "old_pruned.pt")
    model, ckpt = load_model(tmp_path / "old_pruned.pt")
    assert ckpt["version"] == 0 and channel_shapes(model) == channel_shapes(seg.model)
    _same_outputs(model, seg.model)
    with pytest.raises(ValueError, match="records no data"):  # it never recorded a voxel size
        main(["eval", "--checkpoint", str(tmp_path / "old_pruned.pt")])
    d2 = load_checkpoint(det.run / "checkpoint.pt")
    torch.save({"config": d2["model_config"], "model": d2["state_dict"], "optimizer": d2["optimizer"],
                **{k: d2[k] for k in ("epoch", "step", "history", "elapsed", "cpu")}}, tmp_path / "old_det.pt")
    old, ckpt = load_detector(tmp_path / "old_det.pt")
    assert ckpt["task"] == "detection" and ckpt["optimizer"] is not None and ckpt["step"] == 1
    for k, v in load_detector(det.run / "checkpoint.pt")[0].state_dict().items():
        assert torch.equal(v, old.state_dict()[k]), k
    torch.save(seg.model, tmp_path / "module.pt")
    assert load_model(tmp_path / "module.pt", task=None)[0] is not None


def _rewrite(src: Path, dst: Path, **changes: object) -> Path:
    raw = torch.load(src, weights_only=False)
    raw.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del raw[key]
    torch.save(raw, dst)
    return dst


def test_bad_files_name_the_problem(seg: SimpleNamespace, det: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds a detection model; this command needs a segmentation"):
        load_model(det.pruned)
    with pytest.raises(ValueError, match="holds a segmentation model; this command needs a detection"):
        load_detector(seg.pruned)
    with pytest.raises(ValueError, match="needs a segmentation"):
        main(["eval", "--checkpoint", str(det.pruned)])
    with pytest.raises(ValueError, match="needs a segmentation"):
        main(["train", *TINY, "--epochs", "2", "--out", str(tmp_path / "t"), "--resume", str(det.pruned)])
    with pytest.raises(ValueError, match="unknown checkpoint format version 3"):
        load_checkpoint(_rewrite(seg.pruned, tmp_path / "v3.pt", version=3))
    with pytest.raises(ValueError, match="unknown checkpoint format 'torchsparse_lite.segmentation/2'"):
        load_checkpoint(_rewrite(seg.pruned, tmp_path / "f.pt", format="torchsparse_lite.segmentation/2"))
    with pytest.raises(ValueError, match=r"lacks \['state_dict'\]"):
        load_checkpoint(_rewrite(seg.pruned, tmp_path / "m.pt", state_dict=None))
    with pytest.raises(ValueError, match="unknown task 'tracking'"):
        load_checkpoint(_rewrite(seg.pruned, tmp_path / "t.pt", task="tracking"))
    structure = {**load_checkpoint(seg.pruned)["structure"], "kernel_offsets": {"stem.0.conv": [0, 13]}}
    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['kernel_offsets'\]"):
        load_model(_rewrite(seg.pruned, tmp_path / "k.pt", structure=structure))
    with pytest.raises(ValueError, match="names layers the model lacks"):
        load_model(_rewrite(seg.pruned, tmp_path / "l.pt", structure={"channel_shapes": {"nope": [1, 2]}}))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"weights": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="found keys"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="task must be"):
        save_checkpoint(tmp_path / "x.pt", MinkUNet(4, 9, cr=0.125), {}, task="tracking")


def test_structural_methods_from_the_prune_cli_load_in_eval(seg: SimpleNamespace, tmp_path: Path) -> None:
    """taps + blocks + voxels chosen in the prune config JSON; the pruned file evaluates and predicts."""
    cfg = {**PRUNE, "ratio": 0.0, "blocks": {"ratio": 1.0, "criterion": "bn"}, "taps": {"ratio": 0.3},
           "voxels": {"keep": 0.7, "scorer": "norm"}}  # fmt: skip
    (tmp_path / "structural.json").write_text(json.dumps(cfg))
    assert main(["prune", "--checkpoint", str(seg.run / "model.pt"), "--config", str(tmp_path / "structural.json"),
                 "--out", str(tmp_path / "p"), "--no-progress"]) == 0  # fmt: skip
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    assert rep["blocks"]["removed"] and rep["taps"]["map_entries_ratio"] < 1.0 and rep["voxels"]["after"]
    model, ckpt = load_model(tmp_path / "p" / "pruned.pt")
    assert set(ckpt["structure"]) >= {"blocks", "taps", "voxel_drop"}
    assert main(["eval", "--checkpoint", str(tmp_path / "p" / "pruned.pt"), "--out", str(tmp_path / "e"),
                 "--batch-size", "1", "--no-progress"]) == 0  # fmt: skip
