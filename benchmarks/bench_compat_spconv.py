"""Benchmark: a SECOND-style spconv backbone through ``torchsparse_lite.compat.spconv`` vs spconv 2.3.8, CPU.

One command::

    python benchmarks/bench_compat_spconv.py            # --reps 20, writes benchmarks/results/compat_spconv_cpu.json

The model is the ``SecondBackbone`` of ``tests/test_compat_spconv_netdefs.py``
(spconv-style user code, loaded once with spconv and once under
``torchsparse_lite.compat.spconv.install()``, by the helpers of
``tests/test_compat_spconv_models.py``); the compat model loads the spconv
model's ``state_dict`` strictly. Input: the real KITTI frame
``../shared/data/kitti/000008.bin`` when present (else a synthetic scan from
``torchsparse_lite.datasets.synthetic.generate_scan``), voxelized by spconv's
``PointToVoxel`` on SECOND's KITTI grid (0.05, 0.05, 0.1 m). Both sides run on
one thread (spconv's CPU build is only correct so), in eval mode, and every
timed forward builds its maps (the model makes a fresh ``SparseConvTensor``
per call). The BEV outputs are checked equal (max abs difference < 1e-5)
before timing; the two libraries alternate rep by rep; the median of the reps
and the ratio ours / spconv are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import torchsparse_lite.compat.spconv as cp

ROOT = Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / "shared" / "data" / "kitti" / "000008.bin"
MODELS = ROOT / "tests" / "test_compat_spconv_models.py"
VOXEL = ([0.05, 0.05, 0.1], [0.0, -40.0, -3.0, 70.4, 40.0, 1.0])


def load_models_module():
    """The test module with the model loaders and helpers (imported by path)."""
    spec = importlib.util.spec_from_file_location("test_compat_spconv_models", MODELS)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(MODELS.parent))
    spec.loader.exec_module(module)
    return module


def load_points(source: str) -> tuple[np.ndarray, str]:
    """[N, 4] float32 points and a label: the KITTI frame, or a synthetic scan when absent / asked for."""
    if source in ("auto", "kitti") and KITTI.exists():
        return np.fromfile(KITTI, dtype=np.float32).reshape(-1, 4), f"kitti:{KITTI.name}"
    if source == "kitti":
        raise SystemExit(f"--input kitti: {KITTI} is not present")
    from torchsparse_lite.datasets.synthetic import generate_scan  # noqa: PLC0415 - only without the real frame

    return generate_scan(0).points, "synthetic:generate_scan(0)"


def voxelize(points: np.ndarray, sp) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Mean-of-points features [M, 4], indices [M, 4] (batch, z, y, x), grid zyx — spconv's generator (ours agrees)."""
    theirs = sp.utils.PointToVoxel(*VOXEL, 4, 40000, 5)
    voxels, coords, num = theirs(torch.from_numpy(points))
    ours = cp.utils.PointToVoxel(*VOXEL, 4, 40000, 5)(torch.from_numpy(points))
    if not (torch.equal(ours[1], coords) and torch.equal(ours[0], voxels)):
        raise SystemExit("PointToVoxel of the two libraries disagree; run tests/test_compat_spconv_voxel.py")
    feats = voxels.sum(1) / num[:, None].to(voxels.dtype)
    return feats, torch.cat([torch.zeros_like(coords[:, :1]), coords], 1), list(theirs.grid_size)


def time_alternating(runs: dict, warmup: int, reps: int) -> dict[str, list[float]]:
    """Milliseconds of each callable per rep, the callables alternating within every rep."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=20, help="timed forwards per library (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards per library first")
    p.add_argument("--width", type=int, default=16, help="channels of the first stage (SECOND: 16)")
    p.add_argument("--input", choices=("auto", "kitti", "synthetic"), default="auto")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compat_spconv_cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # spconv's CPU build is only correct single-threaded (checked: also in-process)
    try:
        import spconv  # noqa: PLC0415 - the optional peer
        import spconv.pytorch as sp  # noqa: PLC0415
        import spconv.pytorch.utils  # noqa: F401, PLC0415 - PointToVoxel
    except ImportError as e:
        raise SystemExit(f"spconv 2.x is needed as the peer ({e}); pip install spconv") from None

    models = load_models_module()
    points, label = load_points(args.input)
    feats, coords, grid = voxelize(points, sp)
    theirs = models.randomize(models.load_netdefs(compat=False).SecondBackbone(4, grid, args.width), seed=1)
    ours = models.OURS.SecondBackbone(4, grid, args.width).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    models.spconv_eval(theirs, sp)  # its CPU build refuses conv biases in eval; these convs have none anyway
    with torch.no_grad():
        bev_s, bev_o = theirs(feats, coords, 1), ours(feats, coords, 1)
        diff = (bev_s - bev_o).abs().max().item()
        if bev_s.shape != bev_o.shape or diff >= 1e-5:
            raise SystemExit(f"outputs differ (shapes {tuple(bev_s.shape)} / {tuple(bev_o.shape)}, max abs {diff})")
        runs = {"spconv": lambda: theirs(feats, coords, 1), "ours": lambda: ours(feats, coords, 1)}
        times = time_alternating(runs, args.warmup, args.reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "compat_spconv SECOND-style backbone, CPU, maps included",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": 1,
            "torch": torch.__version__,
            "spconv": getattr(spconv, "__version__", None),
        },  # fmt: skip
        "input": {"source": label, "points": int(points.shape[0]), "voxels": int(coords.shape[0]), "grid_zyx": grid},
        "model": {"name": "SecondBackbone", "width": args.width, "bev_shape": list(bev_o.shape)},
        "reps": args.reps,
        "warmup": args.warmup,
        "max_abs_diff": diff,
        "ms": {k: {"median": med[k], "min": min(v), "all": v} for k, v in times.items()},
        "ratio_ours_over_spconv": med["ours"] / med["spconv"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{label}: {coords.shape[0]} voxels, BEV {tuple(bev_o.shape)}, outputs equal (max abs {diff:.2e})")
    ratio = result["ratio_ours_over_spconv"]
    print(f"spconv {med['spconv']:.1f} ms  ours {med['ours']:.1f} ms  ratio ours/spconv {ratio:.2f}  "
          f"(median of {args.reps}, 1 thread) -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
