"""Checked reading of flat little-endian binary point and label files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PathLike = str | os.PathLike


def as_path(path: PathLike, name: str = "path") -> Path:
    """``path`` as a :class:`Path` to an existing file (FileNotFoundError / TypeError otherwise)."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{name}: no such file: {p}")
    return p


def read_records(path: PathLike, num_fields: int, dtype: str = "<f4", *, what: str = "point") -> np.ndarray:
    """Read a file of fixed-size records of ``num_fields`` values each.

    Args:
        path: binary file, no header.
        num_fields: values per record (4 for KITTI x, y, z, intensity; 5 for nuScenes).
        dtype: numpy dtype of one value (little-endian float32 by default).
        what: record name used in error messages.

    Returns:
        [N, num_fields] array of ``dtype`` (native byte order).

    Raises:
        ValueError: empty file, size not a multiple of the record size, or
            non-finite values; the message names the file.
    """
    p = as_path(path)
    dt = np.dtype(dtype)
    record = dt.itemsize * num_fields
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"{p}: file is empty; expected {what} records of {record} bytes")
    if size % record:
        raise ValueError(
            f"{p}: size {size} bytes is not a multiple of the {record}-byte {what} record "
            f"({num_fields} x {dt.name}); the file is truncated or not in this format"
        )
    data = np.fromfile(p, dtype=dt).reshape(-1, num_fields).astype(dt.newbyteorder("="), copy=False)
    if dt.kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data).all(axis=1)).sum())
        raise ValueError(f"{p}: {bad} {what} record(s) contain NaN or Inf values; the file is corrupt")
    return data
