"""GPU benchmark of the grouping strategies and dataflows of the Triton sparse conv.

    python benchmarks/gpu_grouping.py            # needs a CUDA GPU; ~3-5 minutes on one H100

Workload: SemanticKITTI seq 00 scan 000000 (../shared/data relative to the
repo root) voxelized at 0.05 m, MinkUNet-sized layers: a 3x3x3 submanifold
conv at each level (16, 32, 64, 128, 256 channels) and the 2x2x2 stride-2
down-sampling conv between levels. For every layer, dtype, dataflow and
grouping strategy (separate, fixed, adaptive with defaults, adaptive tuned by
GroupingTuner, dense) it measures with ``triton.testing.do_bench``:

* forward time and forward+backward time (ms);
* achieved TFLOP/s on the *real* FLOPs (2 * pairs * Cin * Cout);
* kernel launches and two padded-FLOP overheads: ``padded_overhead`` is the
  arithmetic the engine really issued (Triton: maps rounded up to whole row
  tiles, since programs past a shorter map in a group exit at once),
  ``plan_padded_overhead`` the padding of the plan as a batched matmul;
* the ratio to a dense bf16 GEMM of the same real FLOPs ([pairs, Cin] @ [Cin, Cout]),
  timed in the same run on the same device (1.0 = as fast as a dense GEMM);
* the error against the PyTorch path (fp32, separate).

The PyTorch path (one ``bmm`` per group over padded gathers) is timed too, in
the first dtype, forward only: there the plan's padding is real arithmetic.

Results go to ``benchmarks/results/gpu_grouping_<device>.json`` and ``.png``.
Without CUDA the script exits with status 2. ``--smoke`` runs a tiny subset
on the CPU through the Triton interpreter (a correctness smoke test of this
script, not a benchmark: its timings mean nothing and it writes to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before torchsparse_lite.kernels is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
from torchsparse_lite.kernels import default_tiles, sparse_conv_triton, triton_work  # noqa: E402
from tqdm import tqdm  # noqa: E402

from torchsparse_lite.functional.conv import SparseConvFunction, sparse_conv  # noqa: E402
from torchsparse_lite.grouping import GroupingConfig, GroupingTuner, plan_groups  # noqa: E402
from torchsparse_lite.kmap import KernelMap, build_kernel_map  # noqa: E402
from torchsparse_lite.utils import sparse_quantize  # noqa: E402

SCAN = ROOT.parent / "shared" / "data" / "semantickitti" / "000000.bin"
CHANNELS = (16, 32, 64, 128, 256)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
STRATEGIES = {
    "separate": GroupingConfig("separate"),
    "fixed": GroupingConfig("fixed", group_size=4),
    "adaptive": GroupingConfig("adaptive"),
    "dense": GroupingConfig("dense"),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16, fp16, fp32")
    p.add_argument("--dataflows", default="atomic,output_stationary")
    p.add_argument("--no-backward", action="store_true", help="time the forward pass only")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run through the interpreter (no figures)")
    return p.parse_args()


def load_coords(voxel_size: float, device: str, smoke: bool) -> torch.Tensor:
    """[M, 4] int32 (batch 0, x, y, z) voxels of the SemanticKITTI scan."""
    if not SCAN.exists():
        raise SystemExit(f"error: the SemanticKITTI scan is missing: {SCAN} (see ../shared/data/README.md)")
    pts = np.fromfile(SCAN, dtype=np.float32).reshape(-1, 4)
    if smoke:  # a 2 m cube of the scan keeps the interpreter run short
        pts = pts[(np.abs(pts[:, 0] - 5) < 1) & (np.abs(pts[:, 1]) < 1)][:400]
    q = sparse_quantize(pts, voxel_size)
    coords = torch.cat([torch.zeros(q.coords.shape[0], 1, dtype=torch.int32), q.coords], 1)
    return coords.to(device)


def minkunet_layers(coords: torch.Tensor, smoke: bool) -> list[tuple[str, KernelMap, int, int, float]]:
    """(name, map, Cin, Cout, map build ms) of a submanifold conv per level and the stride-2 convs between."""
    layers = []
    channels = CHANNELS[:2] if smoke else CHANNELS
    build_kernel_map(coords, (3, 3, 3), mode="submanifold", builder="hash")  # warm-up: compiles the index kernels
    for level, c in enumerate(channels):
        t0 = time.perf_counter()
        sub = build_kernel_map(coords, (3, 3, 3), mode="submanifold", builder="hash")
        _sync()
        layers.append((f"L{level} subm3 {c}->{c}", sub, c, c, 1e3 * (time.perf_counter() - t0)))
        if level + 1 < len(channels):
            t0 = time.perf_counter()
            down = build_kernel_map(coords, (2, 2, 2), (2, 2, 2), mode="conv", builder="hash")
            _sync()
            layers.append((f"L{level} down2 {c}->{2 * c}", down, c, 2 * c, 1e3 * (time.perf_counter() - t0)))
            coords = down.out_coords
    return layers


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench(fn, smoke: bool) -> float:
    """Milliseconds per call: ``triton.testing.do_bench`` (median) on CUDA, one timed call in smoke mode."""
    if smoke:
        fn()
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def run_layer(name, kmap, cin, cout, args, tuner) -> list[dict]:
    """All (dtype, dataflow, strategy) rows of one layer."""
    device = kmap.in_idx.device
    gen = torch.Generator(device="cpu").manual_seed(0)
    feats32 = torch.randn(kmap.n_in, cin, generator=gen).to(device)
    weight32 = (torch.randn(kmap.volume, cin, cout, generator=gen) / (cin * kmap.volume) ** 0.5).to(device)
    ref = SparseConvFunction.apply(feats32, weight32, kmap, 1 << 17)
    pairs = sum(kmap.counts)
    real_flops = 2 * pairs * cin * cout
    a = torch.randn(pairs, cin, device=device, dtype=torch.bfloat16)
    b = torch.randn(cin, cout, device=device, dtype=torch.bfloat16)
    dense_ms = bench(lambda: a @ b, args.smoke)
    rows = []
    for dname in args.dtypes.split(","):
        dtype = DTYPES[dname]
        feats, weight = feats32.to(dtype), weight32.to(dtype)
        tiles = default_tiles(cin, cout, args.smoke)
        for flow in args.dataflows.split(","):

            def fwd(cfg, f=feats, w=weight, flow=flow):
                return sparse_conv_triton(f, w, kmap, cfg, dataflow=flow, allow_tf32=False)

            configs = dict(STRATEGIES)
            configs["adaptive-tuned"] = tuner.choose(feats, weight, kmap, fwd, tag=f"triton-{flow}")
            for sname, cfg in configs.items():
                plan = plan_groups(kmap.counts, cfg, kmap.identity_offset, kmap.symmetric)
                work = triton_work(kmap, plan, flow, tiles, cin, cout)
                with torch.no_grad():
                    out = fwd(cfg)
                    err = ((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
                    ms = bench(lambda cfg=cfg: fwd(cfg), args.smoke)
                row = {
                    "layer": name, "cin": cin, "cout": cout, "n_in": kmap.n_in, "n_out": kmap.n_out,
                    "pairs": pairs, "dtype": dname, "engine": "triton", "dataflow": flow, "strategy": sname,
                    "plan_padded_overhead": plan.work(cin, cout).overhead,
                    "config": {k: getattr(cfg, k) for k in ("strategy", "group_size", "epsilon", "threshold", "fold")},
                    "fwd_ms": ms, "tflops": real_flops / ms / 1e9, "real_flops": work.real_flops,
                    "padded_flops": work.padded_flops, "padded_overhead": work.overhead, "launches": work.launches,
                    "dense_bf16_gemm_ms": dense_ms, "ratio_to_dense_gemm": dense_ms / ms, "max_rel_err": err,
                }  # fmt: skip
                if not args.no_backward:
                    f = feats.clone().requires_grad_()
                    w = weight.clone().requires_grad_()
                    g = torch.randn(kmap.n_out, cout, device=device, dtype=dtype)

                    def step(cfg=cfg, f=f, w=w, g=g):
                        torch.autograd.grad(fwd(cfg, f, w), (f, w), g)

                    row["fwd_bwd_ms"] = bench(step, args.smoke)
                    row["fwd_bwd_tflops"] = 3 * real_flops / row["fwd_bwd_ms"] / 1e9
                rows.append(row)
        if dname == args.dtypes.split(",")[0]:  # the PyTorch path once, in the first dtype
            rows.extend(torch_rows(name, kmap, cin, cout, feats, weight, ref, dense_ms, tuner, args))
    return rows


def torch_rows(name, kmap, cin, cout, feats, weight, ref, dense_ms, tuner, args) -> list[dict]:
    """Forward rows of the PyTorch path (bmm over padded gathers), where a plan's padding is real arithmetic."""
    pairs = sum(kmap.counts)

    def fwd(cfg):
        return sparse_conv(feats, weight, kmap, backend="torch", grouping=cfg)

    configs = dict(STRATEGIES)
    configs["adaptive-tuned"] = tuner.choose(feats, weight, kmap, fwd, tag="torch-bmm")
    rows = []
    for sname, cfg in configs.items():
        work = plan_groups(kmap.counts, cfg, kmap.identity_offset, kmap.symmetric).work(cin, cout)
        with torch.no_grad():
            out = fwd(cfg)
            err = ((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
            ms = bench(lambda cfg=cfg: fwd(cfg), args.smoke)
        rows.append({
            "layer": name, "cin": cin, "cout": cout, "n_in": kmap.n_in, "n_out": kmap.n_out, "pairs": pairs,
            "dtype": {v: k for k, v in DTYPES.items()}[feats.dtype], "engine": "torch", "dataflow": "bmm",
            "strategy": sname, "plan_padded_overhead": work.overhead,
            "config": {k: getattr(cfg, k) for k in ("strategy", "group_size", "epsilon", "threshold", "fold")},
            "fwd_ms": ms, "tflops": work.real_flops / ms / 1e9, "real_flops": work.real_flops,
            "padded_flops": work.padded_flops, "padded_overhead": work.overhead, "launches": work.launches,
            "dense_bf16_gemm_ms": dense_ms, "ratio_to_dense_gemm": dense_ms / ms, "max_rel_err": err,
        })  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    head = f"{'layer':<22}{'dtype':<9}{'dataflow':<18}{'strategy':<16}{'fwd ms':>9}{'TFLOP/s':>9}"
    head += f"{'pad ovh':>9}{'plan ovh':>9}{'launch':>7}{'vs GEMM':>9}{'fwd+bwd':>9}{'rel err':>10}"
    print(head)
    for r in rows:
        print(
            f"{r['layer']:<22}{r['dtype']:<9}{r['dataflow']:<18}{r['strategy']:<16}{r['fwd_ms']:>9.3f}"
            f"{r['tflops']:>9.2f}{r['padded_overhead']:>9.1%}{r['plan_padded_overhead']:>9.1%}{r['launches']:>7}"
            f"{r['ratio_to_dense_gemm']:>9.3f}"
            f"{r.get('fwd_bwd_ms', float('nan')):>9.3f}{r['max_rel_err']:>10.1e}"
        )


def plot(rows: list[dict], path: Path, device: str) -> None:
    import matplotlib  # noqa: PLC0415 - plotting only at the end

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    combos = sorted({(r["dtype"], r["dataflow"]) for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    fig, axes = plt.subplots(len(combos), 1, figsize=(14, 3.2 * len(combos)), squeeze=False)
    width = 0.8 / len(strategies)
    for ax, (dt, flow) in zip(axes[:, 0], combos):
        for i, s in enumerate(strategies):
            sel = [r for r in rows if (r["dtype"], r["dataflow"], r["strategy"]) == (dt, flow, s)]
            vals = {r["layer"]: r["tflops"] for r in sel}
            ax.bar(np.arange(len(layers)) + i * width, [vals.get(n, 0.0) for n in layers], width, label=s)
        ax.set_title(f"{device} - {dt}, {flow}: TFLOP/s on real FLOPs")
        ax.set_xticks(np.arange(len(layers)) + 0.4, layers, rotation=20, fontsize=7)
        ax.set_ylabel("TFLOP/s")
    axes[0, 0].legend(fontsize=7, ncol=len(strategies))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    args = parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("error: benchmarks/gpu_grouping.py needs a CUDA GPU (torch.cuda.is_available() is False); "
              "nothing was measured", file=sys.stderr)  # fmt: skip
        return 2
    device = "cpu" if args.smoke else "cuda"
    device_name = "interpreter-smoke" if args.smoke else torch.cuda.get_device_name()
    coords = load_coords(args.voxel_size, device, args.smoke)
    layers = minkunet_layers(coords, args.smoke)
    tuner = GroupingTuner(repeats=1 if args.smoke else 5)
    rows = []
    for name, kmap, cin, cout, _ in tqdm(layers, desc="layers"):
        rows.extend(run_layer(name, kmap, cin, cout, args, tuner))
    print_table(rows)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", device_name).strip("_").lower()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "gpu_grouping", "device": device_name, "smoke": args.smoke,
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "scan": str(SCAN.relative_to(ROOT.parent)), "voxel_size": args.voxel_size, "voxels": int(coords.shape[0]),
        "kmap_build_ms": {n: ms for n, _, _, _, ms in layers}, "rows": rows,
        "note": "tflops = real FLOPs / fwd time; ratio_to_dense_gemm = dense bf16 GEMM time / fwd time",
    }  # fmt: skip
    (args.out / f"gpu_grouping_{slug}.json").write_text(json.dumps(result, indent=1))
    plot(rows, args.out / f"gpu_grouping_{slug}.png", device_name)
    print(f"wrote {args.out / f'gpu_grouping_{slug}.json'} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
