"""``python -m torchsparse_lite predict``: label every point of a scan with a segmentation checkpoint.

Input: a KITTI / SemanticKITTI velodyne ``.bin`` (float32 x, y, z, remission)
or, with ``--nuscenes``, a nuScenes ``.pcd.bin`` (float32 x, y, z, intensity
0..255, ring; intensity is divided by 255 to match the [0, 1] remission).

Output (by the extension of ``--out``):

* ``.label``: one little-endian uint32 per point, SemanticKITTI style. For a
  model trained on SemanticKITTI classes the values are the raw SemanticKITTI
  ids (e.g. 40 = road; the smallest raw id of each train class), for other
  models the train ids (instance bits 0).
* ``.npy``: int64 train ids [N].
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the predict command."""
    parser.add_argument("scan", help="scan file: KITTI/SemanticKITTI .bin (default) or nuScenes .bin with --nuscenes")
    parser.add_argument("--checkpoint", required=True, help="checkpoint written by train or prune")
    parser.add_argument("--nuscenes", action="store_true", help="the scan is a nuScenes sweep (5 floats per point)")
    parser.add_argument("--out", default=None, help="output .label or .npy (default: ./<scan name>.label)")
    parser.add_argument("--labels", default=None, help="optional ground-truth SemanticKITTI .label to score against")
    parser.add_argument("--render", default=None, help="optional PNG: top-down view coloured by predicted class")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0 = torch's default)")


def load_points(path: str | Path, nuscenes: bool) -> np.ndarray:
    """[N, 4] float32 x, y, z, intensity in [0, 1] from a KITTI or nuScenes scan file."""
    from ..datasets.kitti import load_kitti_bin  # noqa: PLC0415
    from ..datasets.nuscenes import load_nuscenes_bin  # noqa: PLC0415

    if nuscenes:
        pts = load_nuscenes_bin(path)[:, :4].copy()
        pts[:, 3] /= 255.0
        return pts
    return load_kitti_bin(path)


def raw_ids(train_ids: np.ndarray, class_names: list[str]) -> np.ndarray:
    """SemanticKITTI raw ids of train ids when the classes are SemanticKITTI's, else the train ids."""
    from ..datasets.semantickitti import LEARNING_MAP, SEMANTICKITTI_CLASSES  # noqa: PLC0415

    if tuple(class_names) != SEMANTICKITTI_CLASSES:
        return train_ids
    lut = np.zeros(len(class_names), dtype=np.int64)
    for train in range(len(class_names)):
        lut[train] = min(raw for raw, t in LEARNING_MAP.items() if t == train)
    return lut[train_ids]


def write_labels(path: str | Path, train_ids: np.ndarray, class_names: list[str]) -> Path:
    """Write ``.label`` (uint32, raw ids for SemanticKITTI models) or ``.npy`` (int64 train ids)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, train_ids.astype(np.int64))
    elif path.suffix == ".label":
        raw_ids(train_ids, class_names).astype("<u4").tofile(path)
    else:
        raise ValueError(f"--out must end with .label or .npy, got {path.name}")
    return path


def run(args: argparse.Namespace) -> int:
    """Predict; writes the labels (and optionally a PNG); prints a class histogram (and scores with --labels)."""
    import torch  # noqa: PLC0415

    from ..datasets.semantickitti import SEMANTICKITTI_CLASSES, load_semantickitti_labels  # noqa: PLC0415
    from ..datasets.voxelize import voxelize_points  # noqa: PLC0415
    from ..tensor import SparseTensor  # noqa: PLC0415
    from .checkpoint import load_model, require_data  # noqa: PLC0415
    from .distributed import pick_device  # noqa: PLC0415
    from .metrics import confusion_matrix, summarize  # noqa: PLC0415

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(Path(args.scan).name.split(".")[0] + ".label")
    if out.suffix not in (".label", ".npy"):
        raise ValueError(f"--out must end with .label or .npy, got {out.name}")
    device = pick_device(args.device)
    model, ckpt = load_model(args.checkpoint, map_location=device, task="segmentation")
    require_data(ckpt, ("voxel_size", "class_names"), args.checkpoint)
    names = list(ckpt["data"]["class_names"])
    points = load_points(args.scan, args.nuscenes)
    vox = voxelize_points(points, None, float(ckpt["data"]["voxel_size"]), len(names))
    coords = torch.cat([torch.zeros_like(vox["coords"][:, :1]), vox["coords"]], 1)
    with torch.no_grad():
        logits = model(SparseTensor(vox["feats"].to(device), coords.to(device)))
    pred = logits.argmax(1).cpu()[vox["inverse"]].numpy()
    write_labels(out, pred, names)
    hist = np.bincount(pred, minlength=len(names))
    print(f"{len(pred):,} points -> {out}")
    print("  " + ", ".join(f"{n} {c}" for n, c in zip(names, hist) if c))
    if args.labels:
        if tuple(names) != SEMANTICKITTI_CLASSES:
            raise ValueError("--labels needs a model trained on SemanticKITTI classes; this one has " + str(names))
        truth, _ = load_semantickitti_labels(args.labels, len(pred))
        summary = summarize(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), len(names)), names)
        print(f"accuracy {summary['accuracy']:.4f}  mIoU {summary['miou']:.4f}")
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    if args.render:
        from .figures import plot_topdown  # noqa: PLC0415

        plot_topdown(points, pred, names, args.render, title=f"prediction {Path(args.scan).name}")
    return 0
