"""``python -m torchsparse_lite bench``: grouping strategies, map builders, backends, dtypes and peers.

The default run reproduces the CPU comparison with spconv on the SemanticKITTI
scan (0.05 m, read from ``--data-root`` or ``$TORCHSPARSE_LITE_DATA``; a
synthetic outdoor scan, with a note, when no data folder holds it),
single-threaded, over the representative layers of MinkUNet and the sparse
ResNet backbone, and prints the tables with ratios. ``--scaling`` adds the
cost-versus-size sweep (10 k -> 1 M voxels) with its power-law fit,
``--networks`` whole-network timings. Results go to ``--out`` as
``bench.json``, ``table.md`` and PNG plots.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .env import machine_info
from .layers import MODELS, model_layers
from .networks import NETWORKS, bench_network
from .plots import plot_epsilon, plot_layers, plot_scaling
from .report import add_ratios, format_summary, format_table, write_json
from .runner import DTYPES, RunOptions, bench_layer
from .sweeps import DEFAULT_SIZES, scaling_sweep
from .workloads import (
    DATA_ENV,
    REAL_SCANS,
    Workload,
    batched,
    data_root,
    folder_workloads,
    real_workloads,
    synthetic_workloads,
    tiled,
)

STRATEGIES = ("separate", "fixed", "adaptive", "dense")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Register the bench options on ``p``."""
    w = p.add_argument_group("workloads")
    w.add_argument("--workloads", nargs="+", default=["semantickitti_0.05"],
                   help=f"names from {sorted(REAL_SCANS)}, synthetic_outdoor, synthetic_indoor, or the groups "
                        "'real', 'synthetic', 'all'; absent real scans are skipped (synthetic_outdoor is used when "
                        "nothing else is left)")
    w.add_argument("--data-root", type=Path, default=None,
                   help=f"folder of the real scans (semantickitti/, nuscenes/, kitti/); default ${DATA_ENV}")
    w.add_argument("--scan-dir", type=Path, help="also benchmark the .bin/.npy scans in this folder")
    w.add_argument("--voxel-size", type=float, default=0.05, help="voxel size for --scan-dir scans (m)")
    w.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    w.add_argument("--max-voxels", type=int, help="subsample every workload to at most this many voxels")
    lay = p.add_argument_group("layers and networks")
    lay.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS,
                     help="layer sets to take (none: '--models' alone, e.g. for a scaling-only run)")
    lay.add_argument("--all-layers", action="store_true",
                     help="every distinct conv of the models (default: one per mode/kernel/tensor stride)")
    lay.add_argument("--max-layers", type=int, help="keep only the first N layers of each model")
    lay.add_argument("--networks", nargs="*", default=[], choices=NETWORKS, help="whole-network timings")
    lay.add_argument("--net-voxels", type=int, default=20000, help="voxels of the whole-network workload")
    lay.add_argument("--net-passes", nargs="+", default=["fwd", "fwd+maps", "fwdbwd"],
                     choices=["fwd", "fwd+maps", "fwdbwd"])
    c = p.add_argument_group("what to compare")
    c.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    c.add_argument("--builders", nargs="+", default=["hash", "sort"], choices=["hash", "sort"])
    c.add_argument("--backends", nargs="+", default=["torch", "triton"], choices=["torch", "triton"])
    c.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES),
                   help="default: float32 on CPU, float32 and float16 on CUDA")
    c.add_argument("--passes", nargs="+", default=["fwd", "fwdbwd"], choices=["fwd", "fwdbwd"])
    c.add_argument("--peers", nargs="*", default=["spconv"], choices=["spconv"], help="peers to compare (none: '')")
    m = p.add_argument_group("method")
    m.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    m.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: spconv's CPU conv is only right single-threaded; with more, it is "
                        "checked at that count and reported 'wrong' when it is)")
    m.add_argument("--warmup", type=int, default=1)
    m.add_argument("--reps", type=int, default=3)
    m.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    s = p.add_argument_group("sweeps")
    s.add_argument("--scaling", action="store_true", help="time vs size sweep with power-law fit")
    s.add_argument("--scaling-sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    s.add_argument("--scaling-reps", type=int, default=3)
    s.add_argument("--scaling-layout", choices=["batch", "space"], default="batch",
                   help="how copies of the scan make sizes above one scan: a batch of scans, or side by side")
    p.add_argument("--out", type=Path, help="output folder (default benchmarks/results/bench_<device>)")


def _device_tag(device: str) -> str:
    info = machine_info(device)
    if torch.device(device).type == "cuda":
        return "cuda_" + re.sub(r"[^A-Za-z0-9]+", "_", info["device_name"]).strip("_").lower()
    return "cpu"


def _default_dtypes(device: str) -> tuple[str, ...]:
    return ("float32", "float16") if torch.device(device).type == "cuda" else ("float32",)


def collect_workloads(args: argparse.Namespace) -> list[Workload]:
    """The workloads named by the options (present ones only), subsampled to ``--max-voxels``."""
    names = []
    for n in args.workloads:
        names += {"real": list(REAL_SCANS), "synthetic": ["synthetic_outdoor", "synthetic_indoor"],
                  "all": [*REAL_SCANS, "synthetic_outdoor", "synthetic_indoor"]}.get(n, [n])
    real = [n for n in names if n in REAL_SCANS]
    synth = [n.removeprefix("synthetic_") for n in names if n.startswith("synthetic_")]
    unknown = [n for n in names if n not in REAL_SCANS and not n.startswith("synthetic_")]
    if unknown or any(k not in ("outdoor", "indoor") for k in synth):
        raise ValueError(f"unknown workloads {unknown or synth}; choose from {sorted(REAL_SCANS)}, "
                         "synthetic_outdoor, synthetic_indoor, real, synthetic, all")
    out = _real(real, args.data_root) + synthetic_workloads(tuple(synth))
    if args.scan_dir is not None:
        out += folder_workloads(args.scan_dir, args.voxel_size)
    if not out:
        out = synthetic_workloads(("outdoor",))
    if args.max_voxels:
        out = [tiled(w, args.max_voxels) if w.n > args.max_voxels else w for w in out]
    return out


def _real(names: list[str], root: Path | None) -> list[Workload]:
    """The real scans present; prints which were asked for but skipped, and where they were looked for."""
    got = real_workloads(names, root)
    skipped = [n for n in names if n not in {w.name for w in got}]
    if skipped:
        folder = data_root(root)
        where = (f"not found under {folder}" if folder is not None
                 else f"no data folder (pass --data-root DIR or set ${DATA_ENV})")
        print(f"bench: skipped real workloads {skipped}: {where}", file=sys.stderr)
    return got


def _layers(args: argparse.Namespace):
    specs = []
    for model in args.models:
        got = model_layers(model, representative=not args.all_layers)
        specs += got[: args.max_layers] if args.max_layers is not None else got
    return specs


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; returns 1 when one of OUR implementations gave a wrong result, else 0."""
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    device = args.device
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available; use --device cpu")
    out_dir = args.out or Path("benchmarks") / "results" / f"bench_{_device_tag(device)}"
    works = collect_workloads(args)
    specs = _layers(args)
    opts = RunOptions(strategies=tuple(args.strategies), builders=tuple(args.builders),
                      backends=tuple(args.backends), dtypes=tuple(args.dtypes or _default_dtypes(device)),
                      passes=tuple(args.passes),
                      peers=tuple(args.peers or ()), warmup=args.warmup, reps=args.reps, device=device,
                      memory=not args.no_memory)
    info = machine_info(device)
    print(f"bench: {info['device_name']} ({device}), {args.threads} thread(s), torch {info['versions']['torch']}, "
          f"spconv {info['versions']['spconv']}; workloads: " + ", ".join(f"{w.name} ({w.n} voxels)" for w in works))
    records: list[dict] = []
    sweeps: list[dict] = []
    items = [(w, b, s) for w in works for b in args.batch_sizes for s in specs]
    for w, b, spec in tqdm(items, desc="layers"):
        first = b == args.batch_sizes[0] and w is works[0]
        records += bench_layer(batched(w, b), b, spec, opts, sweeps if first else None)
    for name in args.networks:
        for w in works[:1]:
            wn = tiled(w, args.net_voxels) if w.n > args.net_voxels else w
            for b in tqdm(args.batch_sizes, desc=f"network {name}"):
                records += bench_network(name, batched(wn, b), b, strategies=tuple(args.strategies),
                                         backends=tuple(args.backends), passes=tuple(args.net_passes),
                                         device=device, warmup=args.warmup, reps=max(1, min(args.reps, 3)),
                                         memory=not args.no_memory)
    add_ratios(records)
    scaling = None
    if args.scaling:
        base = (real_workloads(["semantickitti_0.05"], args.data_root) or synthetic_workloads(("outdoor",)))[0]
        scaling = scaling_sweep(base, args.scaling_sizes, warmup=args.warmup, reps=args.scaling_reps,
                                peers="spconv" in (args.peers or ()), device=device, layout=args.scaling_layout)
    summary, table = format_summary(records), format_table(records)
    print("\n" + summary + "\n\n" + table)
    if scaling:
        print("\nscaling (" + scaling["base"] + "): " + ", ".join(
            f"{k} ~ entries^{v['exponent']:.2f} (r2 {v['r2']:.3f})" for k, v in scaling["fits"].items()
            if not k.endswith("_vs_voxels")) + f"  ['_large': sizes >= {scaling['large_from']} voxels]")
    header = (f"{info['date_utc']}, {info['device_name']} ({device}), {args.threads} thread(s), "
              f"torch {info['versions']['torch']}, spconv {info['versions']['spconv']}")
    print(header)
    payload = {"machine": info, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "workloads": [{"name": w.name, "source": w.source, "voxels": w.n, "voxel_size": w.voxel_size}
                             for w in works],
               "layers": [s.as_dict() for s in specs], "records": records, "epsilon_sweep": sweeps,
               "scaling": scaling}
    path = write_json(out_dir / "bench.json", payload)
    (out_dir / "table.md").write_text(f"{header}\n\n{summary}\n\n{table}\n")
    pngs = [plot_layers(records, out_dir / "layers_fwd.png"), plot_epsilon(sweeps, out_dir / "epsilon.png")]
    if "fwdbwd" in args.passes:
        pngs.append(plot_layers(records, out_dir / "layers_fwdbwd.png", pas="fwdbwd"))
    if scaling:
        pngs.append(plot_scaling(scaling, out_dir / "scaling.png"))
    print(f"wrote {path}, {out_dir / 'table.md'}, " + ", ".join(str(p) for p in pngs if p))
    wrong = [r for r in records if r["impl"].startswith("ours") and r.get("check", {}).get("status") in
             ("wrong", "error")]
    return 1 if wrong else 0
