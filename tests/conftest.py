"""Shared fixtures: the real scans in ../shared/data (skip when absent) and seeded RNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Triton kernels run on the CPU through the interpreter when no GPU is present.
# Triton reads this when a kernel is decorated, so it is set before any test
# module imports torchsparse_lite.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One intra-op thread: the suite also starts subprocesses (DDP ranks, CLI runs),
# and oversubscribed cores make small scatter ops orders of magnitude slower.
# spconv's CPU conv is also only correct single-threaded.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TORCHSPARSE_LITE_DATA", ROOT.parent / "shared" / "data"))


def data_file(rel: str) -> Path:
    """Path of a file under the shared data folder, or skip the test when it is absent."""
    path = DATA / rel
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


@pytest.fixture
def semantickitti_points() -> np.ndarray:
    """[123389, 4] float32 x, y, z, remission of SemanticKITTI seq 00 scan 000000."""
    return np.fromfile(data_file("semantickitti/000000.bin"), dtype=np.float32).reshape(-1, 4)


@pytest.fixture
def nuscenes_points() -> np.ndarray:
    """[34688, 5] float32 x, y, z, intensity, ring of one nuScenes LIDAR_TOP sweep."""
    return np.fromfile(data_file("nuscenes/lidar_top_1532402927647951.bin"), dtype=np.float32).reshape(-1, 5)


@pytest.fixture
def kitti_points() -> np.ndarray:
    """[17238, 4] float32 x, y, z, reflectance of KITTI object frame 000008."""
    return np.fromfile(data_file("kitti/000008.bin"), dtype=np.float32).reshape(-1, 4)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one intra-op thread, and the next one does too whatever this one set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
