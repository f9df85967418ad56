"""Whole-network CPU benchmark: MinkUNet-18 or a plain U-Net on torchsparse_lite vs the same network from spconv 2.3.8.

Usage:  python benchmarks/bench_networks_spconv.py [--net minkunet18|unet] [--voxel-size 0.1] [--cr 1.0] [--reps 3]

Networks: ``minkunet18`` (``--cr`` scales its widths) and ``unet``, the
4-level U-Net of widths 32-256 with k2 s2 down-sampling, transposed
up-sampling and additive skips (``torchsparse_lite.bench.peers.unet``). The
spconv network (``torchsparse_lite.bench.peers.spconv_minkunet`` /
``build_spconv_unet``) mirrors the native one module for module and gets its
weights through ``torchsparse_lite.interop.to_spconv_state_dict``; the logits are checked
equal (1e-4 relative to their scale) before anything is timed. One thread on
both sides (spconv's CPU build is only correct single-threaded), eval mode,
alternating calls, medians of ``--reps``:

* ``fwd, maps in call``: a fresh input tensor per call, so every kernel map is
  built inside the forward (what a new scan costs), for ours, spconv, and the
  same spconv model code run on ``torchsparse_lite.compat.spconv``;
* ``fwd, maps cached``: ours on one input whose map cache is already filled;
* ``fwd+bwd``: ours (spconv's CPU build has no backward).

Workload: SemanticKITTI 000000 (``$TORCHSPARSE_LITE_DATA`` or ../shared/data)
at ``--voxel-size`` (0.1 m: 68,642 voxels), else one synthetic outdoor scan.
Writes JSON and a PNG to ``benchmarks/results/networks_spconv_cpu.json`` (MinkUNet-18)
or ``networks_spconv_unet_cpu.json`` (U-Net).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCHSPARSE_LITE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from torchsparse_lite import SparseTensor, sparse_quantize  # noqa: E402
from torchsparse_lite.bench.env import machine_info  # noqa: E402
from torchsparse_lite.bench.peers.spconv_minkunet import build_spconv_minkunet  # noqa: E402
from torchsparse_lite.bench.peers.unet import SparseUNet, build_spconv_unet  # noqa: E402
from torchsparse_lite.interop import to_spconv_state_dict  # noqa: E402
from torchsparse_lite.models import MinkUNet  # noqa: E402


def load_scan(voxel: float) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(feats [N, 4], coords [N, 4] int32, source) of the real scan, or of a synthetic one."""
    path = Path(os.environ["TORCHSPARSE_LITE_DATA"]) / "semantickitti" / "000000.bin"
    if path.exists():
        pts, source = np.fromfile(path, dtype=np.float32).reshape(-1, 4), "semantickitti/000000.bin"
    else:
        from torchsparse_lite.datasets.synthetic import generate_scan  # noqa: PLC0415 - only without the scan

        scan = generate_scan(0)
        pts, source = np.concatenate([scan.points, scan.remission[:, None]], 1).astype(np.float32), "synthetic"
    q = sparse_quantize(pts[:, :3], voxel)
    coords = torch.cat([torch.zeros(len(q.coords), 1, dtype=torch.int32), q.coords], 1)
    return torch.from_numpy(pts[q.index.numpy()]), coords, source


NETS = {"minkunet18": build_spconv_minkunet, "unet": build_spconv_unet}


def build_models(net: str, cr: float, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(native ``net``, its spconv mirror, the mirror on compat.spconv), same weights, eval mode."""
    import spconv.pytorch as sp  # noqa: PLC0415 - the peer is optional

    import torchsparse_lite.compat.spconv as cp  # noqa: PLC0415

    torch.manual_seed(seed)
    native = (MinkUNet(4, 19, cr=cr) if net == "minkunet18" else SparseUNet(4, 19)).eval()
    for m in native.modules():
        if isinstance(m, torch.nn.BatchNorm1d):  # non-trivial statistics, so a wrong channel order shows
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    state = to_spconv_state_dict(native)
    mirrors = []
    for lib in (sp, cp):
        mirror = NETS[net](lib, native).eval()
        mirror.load_state_dict(state, strict=True)
        mirrors.append(mirror)
    return native, mirrors[0], mirrors[1]


def alternate(runs: dict, reps: int) -> dict[str, float]:
    """Median seconds of each callable, called in turn ``reps`` times after one warm-up each."""
    for fn in runs.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", choices=sorted(NETS), default="minkunet18")
    ap.add_argument("--voxel-size", type=float, default=0.1)
    ap.add_argument("--cr", type=float, default=1.0, help="MinkUNet width multiplier (1.0 = MinkUNet-18)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/networks_spconv[_unet]_cpu.json")
    args = ap.parse_args(argv)
    suffix = "" if args.net == "minkunet18" else f"_{args.net}"
    args.out = args.out or Path(__file__).resolve().parent / "results" / f"networks_spconv{suffix}_cpu.json"
    label = f"MinkUNet-18 cr {args.cr}" if args.net == "minkunet18" else "U-Net 32-256"
    import spconv.pytorch as sp  # noqa: PLC0415

    import torchsparse_lite.compat.spconv as cp  # noqa: PLC0415

    feats, coords, source = load_scan(args.voxel_size)
    # a multiple of 16 per axis: spconv's k=2 s=2 convs keep floor(n / 2) outputs, the native ones every window
    shape = [(int(v) + 16) // 16 * 16 for v in coords[:, 1:].amax(0)]
    native, theirs, compat = build_models(args.net, args.cr)
    print(f"{source} at {args.voxel_size} m: {len(coords)} voxels; {label}")
    with torch.no_grad():
        ref = native(SparseTensor(feats, coords))
        err = float((theirs(sp.SparseConvTensor(feats, coords, shape, 1)) - ref).abs().max())
        err_compat = float((compat(cp.SparseConvTensor(feats, coords, shape, 1)) - ref).abs().max())
    tol = 1e-4 * max(1.0, float(ref.abs().max()))
    if max(err, err_compat) > tol:
        print(f"outputs differ (spconv {err:.3g}, compat {err_compat:.3g} > {tol:.3g}): not timed")
        return 1
    cached = SparseTensor(feats, coords)
    fb_feats = feats.clone().requires_grad_(True)

    def fwd_bwd() -> None:
        native(SparseTensor(fb_feats, coords)).sum().backward()

    runs = {
        "ours fwd, maps in call": lambda: native(SparseTensor(feats, coords)),
        "spconv fwd, maps in call": lambda: theirs(sp.SparseConvTensor(feats, coords, shape, 1)),
        "compat (spconv code on ours) fwd, maps in call": lambda: compat(cp.SparseConvTensor(feats, coords, shape, 1)),
        "ours fwd, maps cached": lambda: native(cached),
    }
    with torch.no_grad():
        times = alternate(runs, args.reps)
    times.update(alternate({"ours fwd+bwd, maps in call": fwd_bwd}, args.reps))
    spc = times["spconv fwd, maps in call"]
    for name, t in times.items():
        ratio = f"{t / spc:.2f}x spconv" if "bwd" not in name and not name.startswith("spconv") else ""
        print(f"{name:<50} {t * 1e3:9.1f} ms  {ratio}")
    info = machine_info("cpu")
    result = {"benchmark": "networks_spconv", "workload": {"source": source, "voxel_size": args.voxel_size,
              "voxels": len(coords)}, "model": {"name": args.net, "cr": args.cr if suffix == "" else None},
              "reps": args.reps,
              "max_abs_err": {"spconv": err, "compat": err_compat}, "median_s": times,
              "ratio_vs_spconv": {k: v / spc for k, v in times.items() if "bwd" not in k}, "machine": info}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    from torchsparse_lite.bench.plots import plot_peer_bars  # noqa: PLC0415 - matplotlib only at the end

    plot_peer_bars(times, "spconv fwd, maps in call", args.out.with_suffix(".png"),
                   f"{label}, {len(coords):,} voxels, 1 thread")  # fmt: skip
    print(f"{info['date_utc']}, {info['cpu']}, 1 thread, torch {info['versions']['torch']}, "
          f"spconv {info['versions']['spconv']}; JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
