"""Issue 7.3b: a full MinkUNet forward at scale on the CPU within a memory budget.

Each measurement runs in a fresh subprocess (``resource.getrusage`` peak RSS
is per process): it builds a synthetic LiDAR-like scan (ground rings, walls,
boxes, noise), voxelizes it at 5 cm, runs ``MinkUNet(4, 19)`` in eval mode under
``torch.no_grad()`` and reports voxels, seconds and peak RSS (after imports and
model build, and after the forward) as JSON.

* default test: 20 k points, cr = 0.5; the forward's peak RSS increase must
  stay under ``SMALL_BUDGET_MIB``.
* slow test (``-m slow``): 1 M points, cr = 1.0, whole process under 24 GiB;
  writes ``runs/scale_minkunet_1m.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchsparse_lite.models.minkunet") is None, reason="MinkUNet not available"
)

SMALL_BUDGET_MIB = 300
LARGE_BUDGET_MIB = 24 * 1024

SCRIPT = r"""
import json, resource, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[3]))
from torchsparse_lite import SparseTensor, sparse_quantize
from torchsparse_lite.models.minkunet import MinkUNet


def peak_mib():
    # VmHWM is this process's own high-water mark; ru_maxrss also carries the RSS of the (large)
    # pytest process this one was forked from, across exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_scan(n, rng):
    # LiDAR-like: 60 % ground rings, 25 % walls, 10 % boxes, 5 % scattered noise
    n_ground, n_wall, n_box = int(0.6 * n), int(0.25 * n), int(0.1 * n)
    n_noise = n - n_ground - n_wall - n_box
    r = 3 + 60 * rng.random(n_ground) ** 1.5
    a = rng.random(n_ground) * 2 * np.pi
    ground = np.stack([r * np.cos(a), r * np.sin(a), -1.7 + 0.03 * rng.normal(size=n_ground)], 1)
    wall_x = rng.choice([-30.0, -12.0, 15.0, 40.0], n_wall) + 0.05 * rng.normal(size=n_wall)
    walls = np.stack([wall_x, rng.uniform(-50, 50, n_wall), rng.uniform(-1.7, 6.0, n_wall)], 1)
    walls[::2, :2] = walls[::2, 1::-1]
    centres = rng.uniform(-40, 40, (300, 2))
    k = rng.integers(0, 300, n_box)
    boxes = np.concatenate([centres[k] + rng.uniform(-2, 2, (n_box, 2)), rng.uniform(-1.7, 0.0, (n_box, 1))], 1)
    noise = rng.uniform([-60, -60, -2], [60, 60, 8], (n_noise, 3))
    pts = np.concatenate([ground, walls, boxes, noise]).astype(np.float32)
    return np.concatenate([pts, rng.random((n, 1), dtype=np.float32)], 1)


n, cr = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
pts = synthetic_scan(n, rng)
q = sparse_quantize(pts, 0.05)
coords = torch.cat([torch.zeros(len(q.coords), 1, dtype=torch.int32), q.coords], 1)
x = SparseTensor(torch.from_numpy(pts[q.index.numpy()]), coords)
del pts
torch.manual_seed(0)
model = MinkUNet(4, 19, cr=cr).eval()
base = peak_mib()
cpu0 = time.process_time()
t = time.perf_counter()
with torch.no_grad():
    logits = model(x)
elapsed = time.perf_counter() - t
cpu = time.process_time() - cpu0
peak = peak_mib()
ok = bool(torch.isfinite(logits).all()) and tuple(logits.shape) == (len(x), 19)
print("RESULT" + json.dumps({"points": n, "voxels": len(x), "cr": cr, "threads": torch.get_num_threads(),
      "seconds": elapsed, "cpu_seconds": cpu, "rss_before_forward_mib": base, "peak_rss_mib": peak,
      "forward_increase_mib": peak - base, "finite_and_shaped": ok}))
"""


def measure(points: int, cr: float, threads: int, timeout: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(points), str(cr), str(threads)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"scale script failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT") :])


def test_small_scan_memory_budget() -> None:
    r = measure(20_000, 0.5, 1, 600)
    assert r["finite_and_shaped"]
    assert r["voxels"] > 15_000
    assert r["forward_increase_mib"] < SMALL_BUDGET_MIB, r
    assert r["peak_rss_mib"] < 1024, r


@pytest.mark.slow
def test_million_point_scan_fits_24gib() -> None:
    r = measure(1_000_000, 1.0, int(os.environ.get("SCALE_THREADS", "2")), 3600)
    out = Path(__file__).resolve().parents[1] / "runs" / "scale_minkunet_1m.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    assert r["finite_and_shaped"]
    assert r["peak_rss_mib"] < LARGE_BUDGET_MIB, r
