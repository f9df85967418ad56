"""Benchmark: dense vs 2:4-sparse gather-GEMM-scatter of a 3x3x3 submanifold conv (GPU, sm80+).

Run on a GPU with::

    python benchmarks/semi_structured_24.py --out benchmarks/results/semi_structured.json

It times the dense and the 2:4 path (``torchsparse_lite.prune.semi_structured``)
of the same layers on the same input in the same process and writes JSON
(+ PNG); on a machine without a suitable GPU it says so and exits with status 2
(no figures are made up).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from torchsparse_lite.kmap.kernel_map import build_kernel_map
from torchsparse_lite.prune.masks import nm_mask_lastdim
from torchsparse_lite.prune.semi_structured import gather_linear_scatter, semi_structured_support, to_offset_operands

ROOT = Path(__file__).resolve().parents[1]


def _time(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` synchronised calls after one warm-up."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def _row(feats: torch.Tensor, w: torch.Tensor, kmap, repeats: int) -> dict:
    """Both paths of one layer: outputs compared, then timed."""
    c = w.shape[2]
    dense_ops = to_offset_operands(w, sparse=False)
    sparse_ops = to_offset_operands(w, sparse=True)
    dense = gather_linear_scatter(feats, dense_ops, kmap, c, pad_rows=64)
    sparse = gather_linear_scatter(feats, sparse_ops, kmap, c, pad_rows=64)
    t_dense = _time(lambda: gather_linear_scatter(feats, dense_ops, kmap, c, pad_rows=64), repeats)
    t_sparse = _time(lambda: gather_linear_scatter(feats, sparse_ops, kmap, c, pad_rows=64), repeats)
    return {
        "channels": c,
        "points": int(feats.shape[0]),
        "map_pairs": int(sum(kmap.counts)),
        "dense_ms": t_dense,
        "sparse_ms": t_sparse,
        "speedup": t_dense / t_sparse,
        "max_abs_diff": float((dense.float() - sparse.float()).abs().max()),
    }


def benchmark_semi_structured(
    channels: Sequence[int] = (64, 128, 256),
    n_points: int = 100_000,
    extent: int = 200,
    dtype: torch.dtype = torch.float16,
    repeats: int = 20,
    seed: int = 0,
) -> dict:
    """Dense vs 2:4-sparse gather-GEMM-scatter of a 3x3x3 submanifold conv, same data, same run.

    Returns:
        ``{"device", "torch", "dtype", "rows": [{"channels", "dense_ms", "sparse_ms", "speedup", "max_abs_diff"}]}``.

    Raises:
        RuntimeError: when no suitable GPU is present.
    """
    ok, why = semi_structured_support()
    if not ok:
        raise RuntimeError(f"semi-structured sparse matmul unavailable: {why}")
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.unique(torch.randint(0, extent, (n_points, 3), generator=gen), dim=0)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).to(torch.int32).to(dev)
    kmap = build_kernel_map(coords, (3, 3, 3), (1, 1, 1), (1, 1, 1), mode="submanifold")
    rows = []
    for c in channels:
        feats = torch.randn(len(coords), c, generator=gen).to(dev, dtype)
        w = torch.randn(27, c, c, generator=gen).to(dev, dtype)
        w = w * nm_mask_lastdim(w.transpose(1, 2), 2, 4).transpose(1, 2)
        rows.append(_row(feats, w, kmap, repeats))
    return {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "dtype": str(dtype), "rows": rows}


def _plot(res: dict, path: Path) -> None:
    """Bar chart of the speed-up per channel count."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([str(r["channels"]) for r in res["rows"]], [r["speedup"] for r in res["rows"]])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("channels (Cin = Cout)")
    ax.set_ylabel("dense time / 2:4 time")
    ax.set_title(f"2:4 gather-GEMM-scatter, {res['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "semi_structured.json"))
    p.add_argument("--points", type=int, default=100_000)
    p.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    ok, why = semi_structured_support()
    if not ok:
        print(f"no run: {why}", file=sys.stderr)
        return 2
    res = benchmark_semi_structured(args.channels, args.points, repeats=args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    _plot(res, out.with_suffix(".png"))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
