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
one thread (spconv's CPU build is only correct so), in eval mode:

* ``fwd, maps in call``, both libraries: the model makes a fresh
  ``SparseConvTensor`` per call, so every map is built in the forward;
* ``ours fwd, maps cached``: the backbone's layers on one compat tensor whose
  map cache a first call filled (spconv refuses a second pass over one input:
  its strided convs' ``indice_key`` exists then);
* ``ours fwd+bwd, maps in call`` (spconv's CPU build has no backward).

The BEV outputs are checked equal (max abs difference < 1e-5), the cached
forward against the fresh one, before timing; the runs alternate rep by rep;
medians and ratios to spconv's forward are printed and written as JSON, with
a PNG next to it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import torchsparse_lite.compat.spconv as cp
from torchsparse_lite.bench.env import machine_info

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


def backbone(model: torch.nn.Module, x) -> torch.Tensor:
    """``SecondBackbone.forward`` from a ready ``SparseConvTensor`` ``x``: its layers, then the BEV view."""
    dense = model.conv_out(model.conv4(model.conv3(model.conv2(model.conv1(model.conv_input(x)))))).dense()
    n, c, d, h, w = dense.shape
    return dense.view(n, c * d, h, w)


def timed_runs(theirs, ours, feats: torch.Tensor, coords: torch.Tensor, reference: torch.Tensor) -> dict:
    """The forwards to time (checked first): both libraries with maps in the call, ours with maps cached."""
    cached = cp.SparseConvTensor(feats, coords, ours.sparse_shape, 1)
    backbone(ours, cached)  # fills the tensor's map cache
    diff = (backbone(ours, cached) - reference).abs().max().item()
    if diff >= 1e-5:
        raise SystemExit(f"the cached forward differs from the fresh one (max abs {diff})")
    return {
        "spconv fwd, maps in call": lambda: theirs(feats, coords, 1),
        "ours (compat) fwd, maps in call": lambda: ours(feats, coords, 1),
        "ours (compat) fwd, maps cached": lambda: backbone(ours, cached),
    }


def measure(theirs, ours, feats: torch.Tensor, coords: torch.Tensor, warmup: int, reps: int) -> tuple:
    """``(ms per run per rep, max abs BEV difference, BEV shape)``: outputs checked equal, then timed."""
    with torch.no_grad():
        bev_s, bev_o = theirs(feats, coords, 1), ours(feats, coords, 1)
        diff = (bev_s - bev_o).abs().max().item()
        if bev_s.shape != bev_o.shape or diff >= 1e-5:
            raise SystemExit(f"outputs differ (shapes {tuple(bev_s.shape)} / {tuple(bev_o.shape)}, max abs {diff})")
        times = time_alternating(timed_runs(theirs, ours, feats, coords, bev_o), warmup, reps)
    grad_feats = feats.clone().requires_grad_(True)
    fwd_bwd = {"ours (compat) fwd+bwd, maps in call": lambda: ours(grad_feats, coords, 1).sum().backward()}
    times.update(time_alternating(fwd_bwd, warmup, max(3, reps // 4)))
    return times, diff, list(bev_o.shape)


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
    times, diff, bev = measure(theirs, ours, feats, coords, args.warmup, args.reps)
    med = {k: statistics.median(v) for k, v in times.items()}
    spc = med["spconv fwd, maps in call"]
    result = {
        "benchmark": "compat_spconv SECOND-style backbone, CPU",
        "machine": {**machine_info("cpu"), "threads": 1},
        "input": {"source": label, "points": int(points.shape[0]), "voxels": int(coords.shape[0]), "grid_zyx": grid},
        "model": {"name": "SecondBackbone", "width": args.width, "bev_shape": bev},
        "reps": args.reps,
        "warmup": args.warmup,
        "max_abs_diff": diff,
        "ms": {k: {"median": med[k], "min": min(v), "all": v} for k, v in times.items()},
        "ratio_ours_over_spconv": med["ours (compat) fwd, maps in call"] / spc,
        "ratio_vs_spconv_fwd": {k: v / spc for k, v in med.items() if "bwd" not in k},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{label}: {coords.shape[0]} voxels, BEV {tuple(bev)}, outputs equal (max abs {diff:.2e})")
    for name, t in med.items():
        ratio = f"{t / spc:.2f}x spconv fwd" if "bwd" not in name and not name.startswith("spconv") else ""
        print(f"{name:<40} {t:8.1f} ms  {ratio}")
    from torchsparse_lite.bench.plots import plot_peer_bars  # noqa: PLC0415 - matplotlib only at the end

    plot_peer_bars(med, "spconv fwd, maps in call", args.out.with_suffix(".png"),
                   f"SECOND-style backbone, {coords.shape[0]:,} voxels, 1 thread", unit="ms")  # fmt: skip
    print(f"(medians, 1 thread) -> {args.out}, {args.out.with_suffix('.png').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
