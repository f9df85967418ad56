"""Semantic-segmentation datasets (synthetic or SemanticKITTI) and their batch collation."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from torchsparse_lite.tensor import SparseTensor
from torchsparse_lite.utils.quantize import sparse_collate

from .augment import default_augmentation
from .semantickitti import SEMANTICKITTI_CLASSES, load_semantickitti
from .synthetic import INDOOR_CLASSES, OUTDOOR_CLASSES, generate_scan, scan_options
from .voxelize import IGNORE_INDEX, voxelize_points

LoadFn = Callable[[int], tuple[np.ndarray, np.ndarray | None]]
Transform = Callable[..., tuple[np.ndarray, Any]]


class _SyntheticSource:
    """Scan ``i`` = ``generate_scan(seed + i, kind, **options)`` (picklable, so worker-safe)."""

    def __init__(self, seed: int, kind: str, options: dict[str, Any]) -> None:
        self.seed, self.kind, self.options = seed, kind, options

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        scan = generate_scan(self.seed + index, self.kind, **self.options)
        return scan.points, scan.labels


class _FileSource:
    """Scan ``i`` = ``load_semantickitti(*pairs[i])``."""

    def __init__(self, pairs: list[tuple[Path, Path | None]]) -> None:
        self.pairs = pairs

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return load_semantickitti(*self.pairs[index])


def find_semantickitti_pairs(root: str | os.PathLike) -> list[tuple[Path, Path | None]]:
    """(scan, label) pairs under ``root``: ``velodyne/*.bin`` + ``labels/*.label``, or both side by side.

    A scan without a label file gets ``None`` (all points ignored).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root_or_files: {root} is not a folder")
    scan_dir, label_dir = (root / "velodyne", root / "labels") if (root / "velodyne").is_dir() else (root, root)
    bins = sorted(scan_dir.glob("*.bin"))
    if not bins:
        raise ValueError(f"root_or_files: no .bin scans in {scan_dir}")
    pairs = []
    for b in bins:
        lab = label_dir / f"{b.stem}.label"
        pairs.append((b, lab if lab.is_file() else None))
    return pairs


class SegmentationDataset(Dataset):
    """Voxelized, labelled scans; build with :meth:`synthetic` or :meth:`semantickitti`.

    Items are dicts: ``coords`` int32 [M, 3], ``feats`` float32 [M, 4]
    (x, y, z relative to the sensor, intensity; voxel means), ``labels``
    int64 [M] (majority vote, 255 = ignore), ``inverse`` int64 [N] (point ->
    voxel), ``point_labels`` int64 [N], ``index`` int. Everything an item
    depends on is derived from (seed, index, epoch), so items are identical
    in every DataLoader worker; call :meth:`set_epoch` to draw new
    augmentations each epoch.
    """

    ignore_index = IGNORE_INDEX
    in_channels = 4

    def __init__(
        self,
        load: LoadFn,
        length: int,
        class_names: Sequence[str],
        *,
        voxel_size: float,
        augment: bool | Transform = False,
        max_points: int | None = None,
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        if not voxel_size > 0:
            raise ValueError(f"voxel_size must be > 0, got {voxel_size!r}")
        if max_points is not None and max_points < 1:
            raise ValueError(f"max_points must be None or >= 1, got {max_points!r}")
        if length < 0:
            raise ValueError(f"the dataset length must be >= 0, got {length}")
        self._load = load
        self._length = int(length)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.voxel_size = float(voxel_size)
        self.transform: Transform | None = default_augmentation() if augment is True else (augment or None)
        self.max_points = max_points
        self.seed = int(seed)
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = {} if cache else None

    # ------------------------------------------------------------ constructors
    @classmethod
    def synthetic(
        cls,
        num_scans: int,
        seed: int = 0,
        kind: str = "outdoor",
        voxel_size: float = 0.1,
        augment: bool | Transform = False,
        max_points: int | None = None,
        *,
        cache: bool = False,
        scan_kwargs: dict[str, Any] | None = None,
    ) -> SegmentationDataset:
        """``num_scans`` synthetic scans, scan ``i`` generated lazily from seed ``seed + i``.

        Args:
            num_scans: dataset length.
            seed: seed of scan 0 (non-negative).
            kind: "outdoor" (classes :data:`OUTDOOR_CLASSES`) or "indoor" (:data:`INDOOR_CLASSES`).
            voxel_size: voxel edge in metres.
            augment: False, True (rotation, flips, scale, jitter) or a transform from ``augment``.
            max_points: random subsample of each scan to at most this many points.
            cache: keep generated scans in memory (per process).
            scan_kwargs: options forwarded to :func:`generate_scan`.
        """
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        seed = int(seed)
        options = dict(scan_kwargs or {})
        unknown = sorted(set(options) - set(scan_options(kind)))
        if unknown:
            raise TypeError(f"scan_kwargs: unknown option(s) {unknown}; valid: {sorted(scan_options(kind))}")
        names = OUTDOOR_CLASSES if kind == "outdoor" else INDOOR_CLASSES
        return cls(
            _SyntheticSource(seed, kind, options),
            num_scans,
            names,
            voxel_size=voxel_size,
            augment=augment,
            max_points=max_points,
            seed=seed,
            cache=cache,
        )

    @classmethod
    def semantickitti(
        cls,
        root_or_files: str | os.PathLike | Sequence[tuple[str | os.PathLike, str | os.PathLike | None]],
        voxel_size: float = 0.05,
        augment: bool | Transform = False,
        max_points: int | None = None,
        *,
        seed: int = 0,
        cache: bool = False,
    ) -> SegmentationDataset:
        """SemanticKITTI scans from a folder (``velodyne/*.bin`` + ``labels/*.label``, or side by side) or pairs.

        Args:
            root_or_files: folder, or a list of (bin_path, label_path or None).
            voxel_size: voxel edge in metres.
            augment, max_points, seed, cache: as in :meth:`synthetic`.
        """
        if isinstance(root_or_files, str | os.PathLike):
            pairs = find_semantickitti_pairs(root_or_files)
        else:
            pairs = []
            for i, item in enumerate(root_or_files):
                if not isinstance(item, tuple | list) or len(item) != 2:
                    raise TypeError(f"root_or_files[{i}] must be a (bin_path, label_path) pair, got {item!r}")
                pairs.append((Path(item[0]), None if item[1] is None else Path(item[1])))
        return cls(
            _FileSource(pairs),
            len(pairs),
            SEMANTICKITTI_CLASSES,
            voxel_size=voxel_size,
            augment=augment,
            max_points=max_points,
            seed=seed,
            cache=cache,
        )

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation / subsampling draw (call before creating the epoch's iterator)."""
        self.epoch = int(epoch)

    def load_scan(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw scan ``index``: points [N, 4] float32 and labels [N] int64 (or None), no augmentation."""
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of {self._length} scans")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = self._load(index)
        if self._cache is not None:
            self._cache[index] = item
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += self._length
        points, labels = self.load_scan(index)
        rng = np.random.default_rng([self.seed, index, self.epoch, 7])
        if self.max_points is not None and points.shape[0] > self.max_points:
            keep = np.sort(rng.choice(points.shape[0], self.max_points, replace=False))
            points = points[keep]
            labels = None if labels is None else labels[keep]
        if self.transform is not None:
            points, _ = self.transform(points, None, rng=rng)
        item: dict[str, Any] = voxelize_points(points, labels, self.voxel_size, self.num_classes)
        item["index"] = index
        return item


def collate_segmentation(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of :class:`SegmentationDataset` (use as a DataLoader's ``collate_fn``).

    Returns:
        dict with ``input``: :class:`SparseTensor` (feats [sum M, 4], coords
        [sum M, 4] as (batch, x, y, z)); ``labels``: int64 [sum M];
        ``offsets``: int64 [B + 1], voxel rows of sample ``i`` are
        ``offsets[i]:offsets[i+1]``; ``inverse`` / ``point_labels``: lists of
        [N_i] int64 (score points of sample ``i`` with
        ``logits[offsets[i]:offsets[i+1]][inverse[i]]``); ``index``: list of dataset indices.
    """
    if not batch:
        raise ValueError("collate_segmentation: the batch is empty")
    tensors = []
    for item in batch:
        coords = item["coords"]
        coords4 = torch.cat([torch.zeros_like(coords[:, :1]), coords], dim=1)
        tensors.append(SparseTensor(item["feats"], coords4, validate=False))
    sizes = torch.tensor([int(item["coords"].shape[0]) for item in batch], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(sizes, 0)])
    return {
        "input": sparse_collate(tensors),
        "labels": torch.cat([item["labels"] for item in batch]),
        "offsets": offsets,
        "inverse": [item["inverse"] for item in batch],
        "point_labels": [item["point_labels"] for item in batch],
        "index": [item.get("index", i) for i, item in enumerate(batch)],
    }
