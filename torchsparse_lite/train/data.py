"""Datasets and loaders of the training commands (synthetic scans or SemanticKITTI folders)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from ..datasets.segmentation import SegmentationDataset, collate_segmentation, find_semantickitti_pairs
from .distributed import DistContext

SYNTHETIC_SCAN_KWARGS: dict[str, Any] = {"num_beams": 32, "num_azimuth": 1024, "max_range": 40.0, "extent": 50.0}
"""Default synthetic sensor: a 32-beam scan cropped to 40 m (about 10k voxels at 0.2 m) to keep CPU training short."""

VAL_SEED_OFFSET = 100_000
"""Held-out synthetic scans use seeds ``seed + VAL_SEED_OFFSET + i``: never seen in training."""


def synthetic_split(
    num_scans: int, seed: int, voxel_size: float, *, augment: bool = False, full_scans: bool = False
) -> SegmentationDataset:
    """``num_scans`` cached synthetic outdoor scans starting at ``seed`` (cropped sensor unless ``full_scans``)."""
    kwargs = None if full_scans else dict(SYNTHETIC_SCAN_KWARGS)
    return SegmentationDataset.synthetic(
        num_scans, seed=seed, voxel_size=voxel_size, augment=augment, cache=True, scan_kwargs=kwargs
    )


def folder_split(
    path: str | Path, voxel_size: float, *, augment: bool = False, select: slice | None = None
) -> SegmentationDataset:
    """SemanticKITTI scans of a folder (``velodyne/`` + ``labels/`` or side by side), optionally a slice of them."""
    pairs = find_semantickitti_pairs(path)
    if select is not None:
        pairs = pairs[select]
        if not pairs:
            raise ValueError(f"data: the selected part of {path} holds no scans; give more scans or --val-data")
    return SegmentationDataset.semantickitti(pairs, voxel_size=voxel_size, augment=augment, cache=True)


def split_folder(path: str | Path, val_fraction: float) -> tuple[slice, slice]:
    """(train, val) slices of a folder's sorted scans: the last ``val_fraction`` are held out.

    A folder with one scan gives the same scan to both (an overfitting run).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(find_semantickitti_pairs(path))
    if n == 1:
        return slice(0, 1), slice(0, 1)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n_val == 0:
        return slice(0, n), slice(0, n)
    return slice(0, n - n_val), slice(n - n_val, n)


def pregenerate(ds: SegmentationDataset, desc: str, progress: bool, indices: Sequence[int] | None = None) -> None:
    """Load (generate) and cache every scan now so that its cost is measured apart from training."""
    idx = range(len(ds)) if indices is None else indices
    for i in tqdm(idx, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        ds.load_scan(int(i))


def class_counts(ds: SegmentationDataset, indices: Sequence[int] | None = None) -> torch.Tensor:
    """[C] int64 voxel label counts (ignore excluded) over the dataset (no augmentation)."""
    counts = torch.zeros(ds.num_classes, dtype=torch.int64)
    for i in range(len(ds)) if indices is None else indices:
        lab = ds[int(i)]["labels"]
        lab = lab[lab != ds.ignore_index]
        counts += torch.bincount(lab, minlength=ds.num_classes)
    return counts


def class_weights(counts: torch.Tensor, mode: str) -> torch.Tensor | None:
    """Loss weights from class counts: ``"none"`` -> None, ``"sqrt"`` -> ``1/sqrt(freq)`` normalised to mean 1.

    Classes never seen get weight 0 (they cannot be learnt from this data).
    """
    if mode == "none":
        return None
    if mode != "sqrt":
        raise ValueError(f"class weights must be 'none' or 'sqrt', got {mode!r}")
    freq = counts.to(torch.float64) / counts.sum().clamp(min=1)
    w = torch.where(freq > 0, freq.clamp(min=1e-12).rsqrt(), torch.zeros_like(freq))
    seen = w > 0
    w[seen] = w[seen] / w[seen].mean()
    return w.to(torch.float32)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` in order: an exact, unpadded split for evaluation."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(ds: Dataset, batch_size: int, seed: int, ctx: DistContext, workers: int = 0) -> DataLoader:
    """Shuffled loader sharded by sample (``DistributedSampler``; call ``loader.sampler.set_epoch``)."""
    sampler = DistributedSampler(ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    return DataLoader(
        ds, batch_size=batch_size, sampler=sampler, collate_fn=collate_segmentation, num_workers=workers
    )


def eval_loader(ds: Dataset, batch_size: int, ctx: DistContext, workers: int = 0) -> DataLoader:
    """In-order loader over this rank's exact shard."""
    sampler = ShardSampler(len(ds), ctx.rank, ctx.world_size)
    return DataLoader(
        ds, batch_size=batch_size, sampler=sampler, collate_fn=collate_segmentation, num_workers=workers
    )
