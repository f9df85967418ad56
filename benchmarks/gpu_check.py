"""One prepared device check of the Triton path: correctness first, then speed, with spconv as the peer.

    python benchmarks/gpu_check.py [--scan FILE.bin] [--out DIR] [--budget-s 450]
    python benchmarks/gpu_check.py --dry-run --out /tmp/check     # CPU, TRITON_INTERPRET=1, tiny sizes

Sections, in order, each with a share of the time budget (time a section
leaves unused flows on; what does not fit is a ``skip`` row, never silence):

1. ``conv``: every conv variant (submanifold k1/k3/k5, strided, transposed,
   dilated, anisotropic) x fp32 / TF32 / fp16 / bf16 x atomic /
   output_stationary x separate / fixed / adaptive / dense, forward and both
   gradients, against the float64 CPU reference (fresh inputs, NaN-poisoned
   outputs); TF32 must really round.
2. ``maps``: the Triton hash and sort maps equal the CPU maps (and their kernels ran).
3. ``determinism``: output_stationary is bit-identical over 3 runs.
4. ``devices``: with several GPUs, tensors on cuda:1.. launched while cuda:0 is current.
5. ``layers``: the CPU layer benchmark's MinkUNet / ResNet layers on the scan and a
   4-scan batch, per precision, grouping and dataflow, fwd and fwd+bwd; dense-GEMM
   and map-building fractions; spconv on the same layers.
6. ``network``: MinkUNet-18 (cr 1.0) fwd and fwd+bwd, maps cached and included; spconv.

Before the sections every kernel variant the run will launch is recorded
without running (:mod:`torchsparse_lite.kernels.aot`) and compiled in parallel
processes, so the sections load binaries instead of compiling one at a time.
Writes ``<out>/gpu_<device>/check.json``, ``table.md`` and PNG plots; prints a
short table last. The scan is ``--scan``, else ``$GPU_CHECK_SCAN``, else
``semantickitti/000000.bin`` under ``$TORCHSPARSE_LITE_DATA`` or ``../shared/data``;
without it a synthetic scan is used (and the report says so).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DRY = "--dry-run" in sys.argv
if DRY:
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated, i.e. on first import

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check_correct as correct  # noqa: E402
import gpu_check_report as report  # noqa: E402
import gpu_check_spconv as peer  # noqa: E402
import gpu_check_speed as speed  # noqa: E402
from gpu_check_common import DATAFLOWS, DRY_PRECISIONS, GROUPINGS, PRECISIONS, Budget  # noqa: E402

from torchsparse_lite.bench.workloads import Workload, batched, data_root, load_points, synthetic_points, voxelize  # noqa: E402,E501

SHARES = {"conv": 0.22, "maps": 0.04, "determinism": 0.03, "devices": 0.03, "layers": 0.38, "network": 0.30}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scan", type=Path, default=None, help="a float32 x,y,z,r .bin scan (SemanticKITTI layout)")
    p.add_argument("--voxel-size", type=float, default=0.05, help="voxel edge of the speed workloads (m)")
    p.add_argument("--batch", type=int, default=4, help="scans in the batched workload (copies of the scan)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole run (s)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5; 1 in a dry run)")
    p.add_argument("--workers", type=int, default=None, help="compile processes (default: CPU count, <= 16)")
    p.add_argument("--dry-run", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny sizes, every code path")
    args = p.parse_args(argv)
    if args.voxel_size <= 0:
        raise ValueError(f"--voxel-size must be positive, got {args.voxel_size}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.budget_s <= 0:
        raise ValueError(f"--budget-s must be positive, got {args.budget_s}")
    if args.reps is not None and args.reps < 1:
        raise ValueError(f"--reps must be >= 1, got {args.reps}")
    if args.scan is not None and not args.scan.is_file():
        raise ValueError(f"--scan {args.scan} is not a file")
    return args


def scan_path(args: argparse.Namespace) -> Path | None:
    if args.scan is not None:
        return args.scan
    env = os.environ.get("GPU_CHECK_SCAN")
    path = Path(env) if env else data_root() / "semantickitti" / "000000.bin"
    return path if path.is_file() else None


def crop(coords: torch.Tensor, n: int) -> torch.Tensor:
    """About ``n`` voxels of ``coords``: a slab in x around the median (a contiguous piece of the scene)."""
    if coords.shape[0] <= n:
        return coords
    xs = torch.sort(coords[:, 1]).values
    mid = coords.shape[0] // 2
    lo, hi = int(xs[mid - n // 2]), int(xs[min(mid + n // 2, coords.shape[0] - 1)])
    return coords[(coords[:, 1] >= lo) & (coords[:, 1] < max(hi, lo + 1))]


def workloads(args, dry: bool) -> tuple[list[Workload], torch.Tensor, str]:
    """(speed workloads, correctness coordinates, source line for the report)."""
    path = None if dry else scan_path(args)
    if path is not None:
        pts = load_points(path)
        scan = Workload(path.stem, voxelize(pts, args.voxel_size), "real", args.voxel_size, int(pts.shape[0]))
        small = crop(voxelize(pts, 0.1), 12_000)
        source = f"real scan {path} ({pts.shape[0]} points -> {scan.n} voxels at {args.voxel_size} m)"
    else:
        pts, kind = synthetic_points(0)
        if dry:
            pts = pts[: 4000]
        size = 0.5 if dry else args.voxel_size
        scan = Workload("synthetic", voxelize(pts, size), kind, size, int(pts.shape[0]))
        small = crop(voxelize(pts, 0.5 if dry else 0.1), 300 if dry else 12_000)
        source = f"{kind} scan ({scan.n} voxels at {size} m): no real scan found"
    return [scan, batched(scan, 2 if dry else args.batch)], small, source


def plan_launches(arch: int, precisions: tuple[str, ...]) -> list:
    """Every kernel variant the sections launch, recorded for ``arch`` without running (CPU tensors, tiny maps).

    The variant depends on channels, strides, dtype and tiles, not on map sizes (those are not
    specialised), so the conv and layer channel pairs on a 400-voxel map and one MinkUNet-18
    forward+backward per precision cover the run, with both coordinate indexes.
    """
    from torchsparse_lite.kernels import TritonHashIndex, TritonSortIndex, aot, sparse_conv_triton  # noqa: PLC0415

    from torchsparse_lite.config import use_config  # noqa: PLC0415
    from torchsparse_lite.kmap import build_kernel_map, pack  # noqa: PLC0415
    from torchsparse_lite.models import MinkUNet  # noqa: PLC0415
    from torchsparse_lite.tensor import SparseTensor  # noqa: PLC0415

    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 12, (400, 3), generator=g), dim=0).int()
    coords = torch.cat([torch.zeros_like(coords[:, :1]), coords], 1)
    kmap = build_kernel_map(coords, 3)
    channels = {(v[4], v[5]) for v in correct.VARIANTS.values()}
    channels |= {(s.cin, s.cout) for _, s in speed.layer_specs(False)}
    with aot.capture_launches((arch,)) as rec:
        TritonHashIndex(pack(coords)).query(pack(coords))
        TritonSortIndex(pack(coords)).lookup(pack(coords))
        for precision in precisions:
            dtype, tf32 = PRECISIONS[precision]
            for (cin, cout), flow in [(c, f) for c in sorted(channels) for f in DATAFLOWS]:
                f = torch.randn(kmap.n_in, cin, dtype=dtype, requires_grad=True)
                w = torch.randn(kmap.volume, cin, cout, dtype=dtype, requires_grad=True)
                out = sparse_conv_triton(f, w, kmap, "fixed", dataflow=flow, allow_tf32=tf32)
                out.backward(torch.ones_like(out))
            net = MinkUNet(4, 19).to(dtype).eval()
            with use_config(backend="triton", tf32=tf32):
                net(SparseTensor(torch.randn(coords.shape[0], 4, dtype=dtype), coords)).float().sum().backward()
    return rec.launches


def precompile(device: torch.device, precisions: tuple[str, ...]) -> tuple[int, float]:
    """Compile every variant of :func:`plan_launches` side by side (Triton's cache then serves the sections)."""
    from torchsparse_lite.kernels import aot  # noqa: PLC0415

    major, minor = torch.cuda.get_device_capability(device)
    return aot.precompile(plan_launches(major * 10 + minor, precisions), min(16, os.cpu_count() or 1))


def run_sections(args, device, dry: bool) -> dict:
    precisions = DRY_PRECISIONS if dry else tuple(PRECISIONS)
    reps = args.reps or (1 if dry else 5)
    t0 = time.monotonic()
    loads, small, source = workloads(args, dry)
    compiled, compile_note = (0, 0.0), "dry run: the kernels are interpreted, nothing to compile"
    if not dry:
        try:
            compiled, compile_note = precompile(device, precisions), "ok"
        except Exception as exc:  # noqa: BLE001 - an optimisation: without it kernels compile on first launch
            compile_note = f"skipped ({type(exc).__name__}: {exc}); kernels compile on first launch"[:300]
    budget = Budget(max(args.budget_s - (time.monotonic() - t0), 60.0), SHARES)
    rows, times, devices_note = [], {}, ""
    sections = {
        "conv": lambda: correct.check_convs(small, device, budget, dry),
        "maps": lambda: correct.check_maps(small, device, budget, dry),
        "determinism": lambda: correct.check_determinism(small, device, budget, dry),
        "devices": lambda: correct.check_devices(small, device, budget, dry),
        "layers": lambda: speed.layer_rows(loads[:1] if dry else loads, device, precisions, GROUPINGS, DATAFLOWS,
                                           budget, reps, dry),
        "network": lambda: speed.network_rows(loads[:1] if dry else loads, device, ("fp32", "bf16") if dry else
                                              precisions, GROUPINGS, budget, max(1, reps - 2), dry),
    }
    for name, fn in sections.items():
        budget.enter(name)
        start = time.monotonic()
        out = fn()
        if name == "devices":
            out, devices_note = out
        rows += out
        times[name] = round(time.monotonic() - start, 1)
    return {"workloads": source, "workload_sizes": {w.name: w.n for w in loads},
            "correctness_voxels": int(small.shape[0]), "devices": devices_note, "peer": peer.status(device),
            "precompiled_variants": compiled[0], "compile_s_summed": round(compiled[1], 1), "precompile": compile_note,
            "section_s": times, "elapsed_s": round(time.monotonic() - t0, 1), "budget_s": args.budget_s,
            "reps": reps, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if DRY:
        torch.set_num_threads(1)  # spconv's CPU scatter is only correct single-threaded
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run for the CPU smoke run)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda", 0)
    result = {**report.machine(device), "dry_run": DRY, **run_sections(args, device, DRY)}
    out_dir = report.write(result, args.out, device, DRY)
    print(report.summary(result))
    print(f"results: {out_dir}")
    return 0 if all(r["status"] != "fail" for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
