"""Variants of the PyTorch path's CPU conv on a cached map, ours vs spconv in one process (issue 13).

Usage:  python benchmarks/conv_variants.py [--rounds 7] [--channels 32 64] [--threads 1 2]

Workload: the SemanticKITTI scan at 0.05 m (94,444 voxels, 284,298 pairs of a
submanifold 3x3x3 map) when ../shared/data is present, else a synthetic
outdoor scan. Every variant's output is checked first against the
``index_add`` executor (the PyTorch path before the segment scatter) and
against a float64 reference; a variant that differs is reported ``wrong``
and not timed. Variants, spconv and the roofline run interleaved, round
after round, in one process: the ratios within a run are what count on a
shared VM. Each call's wall time, CPU time and minor page faults are
recorded. The CPU time is the process's: on a loaded 2-core VM it is the
steadier figure of a 1-thread run; at 2 threads it sums both threads, and
the share of it spent off the calling thread (``worker cpu``) tells which
ops use the second thread even when the VM is too loaded for a speed-up.
The roofline is a dense GEMM with the same real FLOPs (all pairs, identity
included, in one [pairs, Cin] @ [Cin, Cout]) plus one read of the gathered
rows; ``roofline`` in the table is that time over the variant's.

Variants named "map built between calls" rebuild the map and allocate a
48 MB float64 temporary untimed before each call, as a network does between
two convs: that leaves glibc's heap trimmed, so fresh temporaries fault
again every call (the case the segment pass's workspace is for).

Components (gather, GEMMs, scatters alone, at every thread count) show where
the time goes and which ops use a second thread. Writes
``benchmarks/results/bench_cpu/conv_variants.json`` and prints the table.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # the pool may grow to 2; each phase sets its count
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_core.py: no spinning workers on a shared VM
os.environ.setdefault("TORCHSPARSE_LITE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)

from torchsparse_lite.bench.compare import OK, WRONG, Check, check_close  # noqa: E402
from torchsparse_lite.bench.env import machine_info  # noqa: E402
from torchsparse_lite.bench.peers import SpconvConv, spconv_available  # noqa: E402
from torchsparse_lite.bench.reference import autograd_conv  # noqa: E402
from torchsparse_lite.bench.workloads import real_workloads, synthetic_workloads  # noqa: E402
from torchsparse_lite.functional.conv import sparse_conv  # noqa: E402
from torchsparse_lite.grouping import ExecutionPlan, GroupingConfig, TorchConvFunction, plan_groups  # noqa: E402
from torchsparse_lite.grouping.segments import block_cells, segment_blocks  # noqa: E402
from torchsparse_lite.kmap import build_kernel_map  # noqa: E402

KS = (3, 3, 3)
OUT = Path(__file__).resolve().parent / "results" / "bench_cpu" / "conv_variants.json"
Fn = Callable[[], torch.Tensor]
SPCONV, ROOF = "spconv (pairs cached)", "roofline: dense GEMM, same FLOPs, + one read"
CHURN = ", map built between calls"
SCALING = ("index_add (previous executor)", "segment (new executor)", SPCONV, ROOF)  # timed at every thread count


class Scratch:
    """Buffers that persist across calls (the "persistent workspace" variants), grown as needed, by name."""

    def __init__(self) -> None:
        self.bufs: dict[str, torch.Tensor] = {}

    def take(self, name: str, rows: int, cols: int) -> torch.Tensor:
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < rows * cols:
            buf = self.bufs[name] = torch.empty(rows * cols)
        return buf[: rows * cols].view(rows, cols)


def index_add_plan(km, grouping: str = "separate") -> ExecutionPlan:
    groups = plan_groups(km.counts, GroupingConfig(grouping), km.identity_offset, km.symmetric)
    return ExecutionPlan("torch", groups, scatter="index_add")


def offsets_of(km) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(k, input rows, output rows) of every gathered offset (the identity left out)."""
    return [(k, km.in_idx[s:e], km.out_idx[s:e]) for k, (s, e) in enumerate(km.bounds)
            if k != km.identity_offset and e > s]  # fmt: skip


def index_add_workspace(x, w, km, scratch: Scratch, int32: bool = False) -> torch.Tensor:
    """The index_add_ executor with its gather and GEMM buffers persisting across calls."""
    out = x @ w[km.identity_offset]
    for k, src, dst in offsets_of(km):
        if int32:
            src, dst = src.int(), dst.int()
        g = scratch.take("g", src.numel(), x.shape[1])
        torch.index_select(x, 0, src, out=g)
        y = scratch.take("y", src.numel(), w.shape[2])
        torch.mm(g, w[k], out=y)
        out.index_add_(0, dst, y)
    return out


def segment_blocks_of(km, cells: int, int32: bool = False):
    groups = plan_groups(km.counts, GroupingConfig(), km.identity_offset, km.symmetric)
    blocks = segment_blocks(km, groups, False, cells)
    if int32:
        blocks = [(b.start, b.stop, b.gather.int(), b.spans, b.order.int(), b.offsets.int()) for b in blocks]
    else:
        blocks = [(b.start, b.stop, b.gather, b.spans, b.order, b.offsets) for b in blocks]
    return groups, blocks


def onednn_mm(a: torch.Tensor, w_t: torch.Tensor, out: torch.Tensor) -> None:
    """``out = a @ w_t.T`` through oneDNN (torch's fp32 matmul takes MKL, whose AMD path lacks AVX-512)."""
    out.copy_(torch.ops.mkldnn._linear_pointwise(a, w_t, None, "none", [], ""))


def segment_variant(x, w, groups, blocks, scratch: Scratch | None = None, sub: int = 0,
                    w_t: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The segment scatter of a separate plan; ``scratch``: persistent temporaries; ``sub``: L2 sub-blocks;
    ``w_t`` ([K, Cout, Cin]): GEMMs through oneDNN, each into a fresh output copied into ``y``."""
    outs, ident = [], groups.identity

    def mm(a: torch.Tensor, k: int, out: torch.Tensor) -> None:
        if w_t is None:
            torch.mm(a, w[k], out=out)
        else:
            onednn_mm(a, w_t[k], out)

    for start, stop, gather, spans, order, offsets in blocks:
        n = stop - start
        cells = n + gather.numel()
        y = scratch.take("y", cells, w.shape[2]) if scratch else x.new_empty((cells, w.shape[2]))
        for r in range(start, stop, sub or n):
            mm(x[r : min(stop, r + (sub or n))], ident, y[r - start : min(stop, r + (sub or n)) - start])
        if not sub:
            g = scratch.take("g", gather.numel(), x.shape[1]) if scratch else x.new_empty((gather.numel(), x.shape[1]))
            torch.index_select(x, 0, gather, out=g)
        for group, (first, rows) in zip(groups.groups, spans):
            step = sub or max(rows, 1)
            for r in range(first, first + rows, step):
                e = min(first + rows, r + step)
                mm(x.index_select(0, gather[r:e]) if sub else g[r:e], group.offsets[0], y[n + r : n + e])
        outs.append(F.embedding_bag(order, y, offsets, mode="sum"))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def forward_variants(x, w, km, peer) -> dict[str, Fn]:
    """Every timed forward variant (map cached), by name."""
    scratch, big = Scratch(), 1 << 30
    cells = block_cells(x.shape[1], w.shape[2], x.dtype, 1 << 17)
    plan = index_add_plan(km)
    one, one32 = segment_blocks_of(km, big), segment_blocks_of(km, cells, int32=True)
    dflt = segment_blocks_of(km, cells)
    w_t = w.transpose(1, 2).contiguous()
    v: dict[str, Fn] = {
        "index_add (previous executor)": lambda: TorchConvFunction.apply(x, w, km, plan),
        "index_add + persistent workspace": lambda: index_add_workspace(x, w, km, scratch),
        "index_add + workspace, int32 indices": lambda: index_add_workspace(x, w, km, scratch, int32=True),
        "segment (new executor)": lambda: sparse_conv(x, w, km, backend="torch"),
        "segment, one block, fresh temporaries": lambda: segment_variant(x, w, *one),
        "segment, one block, persistent workspace": lambda: segment_variant(x, w, *one, scratch=scratch),
        "segment, 8 MiB blocks, fresh temporaries": lambda: segment_variant(x, w, *dflt),
        "segment, int32 indices": lambda: segment_variant(x, w, *one32),
        "segment, L2 sub-blocks of 2048 rows": lambda: segment_variant(x, w, *dflt, sub=2048),
        "segment, L2 sub-blocks of 4096 rows": lambda: segment_variant(x, w, *dflt, sub=4096),
        "segment, oneDNN GEMMs (+ copy)": lambda: segment_variant(x, w, *dflt, w_t=w_t),
        "segment, oneDNN GEMMs (+ copy), L2 sub-blocks of 2048": lambda: segment_variant(x, w, *dflt, sub=2048,
                                                                                         w_t=w_t),
        "segment, adaptive grouping (offset pairs in one bmm)": lambda: sparse_conv(
            x, w, km, backend="torch", grouping=GroupingConfig("adaptive", threshold=1 << 30)),
        "segment, fixed groups of 4 (padded bmm)": lambda: sparse_conv(
            x, w, km, backend="torch", grouping=GroupingConfig("fixed", group_size=4)),
        "segment, mkldnn disabled": lambda: _no_mkldnn(lambda: sparse_conv(x, w, km, backend="torch")),
    }
    if peer is not None:
        sx = peer.prepare(x)
        v[SPCONV] = lambda: peer.forward(sx)[0]
    churn = _churn(km)  # untimed before each call: what a network allocates and frees between two convs
    for name in ("index_add (previous executor)", "segment (new executor)", "segment, 8 MiB blocks, fresh temporaries",
                 SPCONV):  # fmt: skip
        if name in v:
            v[name + CHURN] = (v[name], churn)
    a, o = torch.randn(int(km.in_idx.numel()), x.shape[1]), torch.empty(int(km.in_idx.numel()), w.shape[2])
    v[ROOF] = lambda: (torch.mm(a, w[0], out=o), a.sum())[0]
    v[ROOF + " (oneDNN)"] = lambda: (onednn_mm(a, w_t[0], o), a.sum())[0]
    return v


def _churn(km) -> Callable[[], object]:
    """Rebuild the map and run a float64 GEMM the size of the layer (untimed): leaves glibc's heap trimmed."""
    coords = km.in_coords
    a = torch.randn(coords.shape[0], 64, dtype=torch.float64)
    return lambda: (build_kernel_map(coords, KS, builder="sort"), a @ a.T[:, :64])


def _no_mkldnn(fn: Fn) -> torch.Tensor:
    with torch.backends.mkldnn.flags(enabled=False):
        return fn()


def fwd_bwd_variants(x, w, km) -> dict[str, Fn]:
    """Forward + backward (input and weight gradients) with each scatter."""
    go = torch.randn(x.shape[0], w.shape[2])
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    plan = index_add_plan(km)

    def run(seg: bool) -> torch.Tensor:
        xg.grad = wg.grad = None
        out = sparse_conv(xg, wg, km, backend="torch") if seg else TorchConvFunction.apply(xg, wg, km, plan)
        out.backward(go)
        return out.detach()

    return {"fwd+bwd index_add": lambda: run(False), "fwd+bwd segment": lambda: run(True)}


def component_variants(x, w, km) -> dict[str, Fn]:
    """Gather, GEMMs and scatters alone over the map's gathered offsets (no identity)."""
    offs = offsets_of(km)
    src = torch.cat([s for _, s, _ in offs])
    dst = torch.cat([d for _, _, d in offs])
    g, y = x.index_select(0, src), torch.empty(src.numel(), w.shape[2])
    order = torch.argsort(dst, stable=True)
    per = torch.bincount(dst, minlength=x.shape[0])
    bag_offsets = per.cumsum(0) - per
    out = torch.zeros(x.shape[0], w.shape[2])
    wt = w.transpose(1, 2).contiguous()
    bounds, s = [], 0
    for k, a, _ in offs:
        bounds.append((k, s, s + a.numel()))
        s += a.numel()
    return {
        "gather: index_select fresh": lambda: x.index_select(0, src),
        "gather: index_select(out=)": lambda: torch.index_select(x, 0, src, out=g),
        "GEMMs: mm(out=), MKL": lambda: [torch.mm(g[a:b], w[k], out=y[a:b]) for k, a, b in bounds],
        "GEMMs: oneDNN linear (fresh out)": lambda: [
            torch.ops.mkldnn._linear_pointwise(g[a:b], wt[k], None, "none", [], "") for k, a, b in bounds],
        "scatter: index_add_": lambda: out.index_add_(0, dst, y),
        "scatter: scatter_add_": lambda: out.scatter_add_(0, dst[:, None].expand(-1, y.shape[1]), y),
        "scatter: embedding_bag (sorted segments)": lambda: F.embedding_bag(order, y, bag_offsets, mode="sum"),
    }


def timed(fns: dict[str, Callable | tuple], rounds: int, reps: int) -> dict[str, dict]:
    """Interleaved rounds: every fn ``reps`` times per round; wall, CPU and page faults per call.

    A value ``(fn, setup)`` runs ``setup()`` untimed before every timed ``fn()``.
    """
    samples = {k: ([], [], [], []) for k in fns}
    calls = {k: f if isinstance(f, tuple) else (f, lambda: None) for k, f in fns.items()}  # (fn, untimed setup)
    for f, _ in calls.values():
        f()  # warm-up: caches, plans, allocator
    for _ in range(rounds):
        for name, (f, setup) in calls.items():
            wall, cpu, main_cpu, flt = samples[name]
            for _ in range(reps):
                setup()
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
                f()
                main_cpu.append(time.thread_time() - m0)
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - t0)
                flt.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {k: _stats(*v) for k, v in samples.items()}


def _stats(wall: list[float], cpu: list[float], main_cpu: list[float], flt: list[int]) -> dict:
    """Medians; ``worker_cpu_share``: the CPU time spent off the calling thread (0: the op used no other thread)."""
    q = statistics.quantiles(wall, n=4) if len(wall) > 1 else [wall[0]] * 3
    return {"wall_ms": statistics.median(wall) * 1e3, "wall_q1_ms": q[0] * 1e3, "wall_q3_ms": q[2] * 1e3,
            "wall_min_ms": min(wall) * 1e3, "cpu_ms": statistics.median(cpu) * 1e3,
            "worker_cpu_share": max(0.0, 1.0 - sum(main_cpu) / max(sum(cpu), 1e-12)),
            "faults_per_call": statistics.mean(flt), "samples": len(wall)}  # fmt: skip


def checks(fns: dict[str, Fn], base: torch.Tensor, ref64: torch.Tensor) -> dict[str, dict]:
    """Each output vs the index_add executor (bit-equal?) and vs the float64 reference (tolerance)."""
    out = {}
    for name, f in fns.items():
        f = f[0] if isinstance(f, tuple) else f
        if name.startswith("roofline"):
            out[name] = {"status": OK, "note": "not a conv"}
            continue
        got = f()
        chk = check_close(got.double(), ref64)
        if chk.status == OK and got.shape == base.shape and (got - base).abs().max() > 1e-3 * base.abs().max():
            chk = Check(WRONG, note="differs from the index_add executor")
        out[name] = {**chk.as_dict(), "bit_equal_index_add": bool(torch.equal(got, base))}
    return out


def run_channels(w, km, c: int, threads: list[int], args, peer_ok: bool) -> list[dict]:
    g = torch.Generator().manual_seed(c)
    x = torch.randn(w.n, c, generator=g)
    wt = torch.randn(27, c, c, generator=g) / (27 * c) ** 0.5
    peer = SpconvConv(wt, KS, (1, 1, 1), "submanifold", w.coords) if peer_ok else None
    base = TorchConvFunction.apply(x, wt, km, index_add_plan(km))
    ref64 = autograd_conv(x.double(), wt.double(), km)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        fwd = forward_variants(x, wt, km, peer)
        if t > 1:
            fwd = {k: f for k, f in fwd.items() if k in SCALING}
        if args.variants:
            fwd = {k: f for k, f in fwd.items() if any(v in k for v in args.variants)}
        chk = checks(fwd, base, ref64)
        good = {k: f for k, f in fwd.items() if chk[k]["status"] == OK}
        rows += [{"channels": c, "threads": t, "variant": k, "check": chk[k]} for k in fwd if k not in good]
        stats = timed(good, args.rounds, args.reps)
        if not args.forward_only:
            if t == 1:
                stats |= timed(fwd_bwd_variants(x, wt, km), max(2, args.rounds // 2), args.reps)
            stats |= timed(component_variants(x, wt, km), max(2, args.rounds // 2), args.reps)
        for name, st in stats.items():
            rows.append({"channels": c, "threads": t, "variant": name, "check": chk.get(name), **st})
    torch.set_num_threads(1)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """ours / spconv and roofline fraction (same channels and threads), and the speed-up over 1 thread.

    Rows timed with the map rebuilt between calls are divided by spconv timed the same way.
    """
    idx = {(r["channels"], r["threads"], r["variant"]): r for r in rows}
    for r in rows:
        if "wall_ms" not in r:
            continue
        key = (r["channels"], r["threads"])
        churn = r["variant"].endswith(CHURN)
        sp, roof = idx.get((*key, SPCONV + CHURN if churn else SPCONV)), idx.get((*key, ROOF))
        one = idx.get((r["channels"], 1, r["variant"]))
        for clock in ("wall_ms", "cpu_ms"):
            if sp and "wall_ms" in sp and not r["variant"].startswith(("GEMMs", "gather", "scatter", "fwd+bwd")):
                r[f"vs_spconv_{clock[:-3]}"] = r[clock] / sp[clock]
            if roof and "wall_ms" in roof:
                r[f"roofline_{clock[:-3]}"] = roof[clock] / r[clock]
        if one and "wall_ms" in one and r["threads"] != 1:
            r["speedup_vs_1_thread_wall"] = one["wall_ms"] / r["wall_ms"]


def print_table(rows: list[dict]) -> None:
    print(f"\n| {'variant':<66} | C  | thr | wall ms | cpu ms | /spconv wall | /spconv cpu | roofline cpu | "
          "vs 1 thr | worker cpu | faults |")
    print("|" + "|".join("-" * n for n in (68, 4, 5, 9, 8, 14, 13, 14, 10, 12, 8)) + "|")
    for r in rows:
        if "wall_ms" not in r:
            print(f"| {r['variant']:<66} | {r['channels']:<2} | {r['threads']:>3} | wrong: {r['check']['note']} |")
            continue

        def f(key: str, r: dict = r) -> str:
            return f"{r[key]:.2f}" if key in r else ""

        print(f"| {r['variant']:<66} | {r['channels']:<2} | {r['threads']:>3} | {r['wall_ms']:7.1f} | "
              f"{r['cpu_ms']:6.1f} | {f('vs_spconv_wall'):>12} | {f('vs_spconv_cpu'):>11} | "
              f"{f('roofline_cpu'):>12} | {f('speedup_vs_1_thread_wall'):>8} | {f('worker_cpu_share'):>10} | "
              f"{r['faults_per_call']:>6.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--reps", type=int, default=2, help="calls per variant per round")
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--variants", nargs="+", help="time only the forward variants whose names contain one of these")
    ap.add_argument("--forward-only", action="store_true", help="skip fwd+bwd and the components")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    works = real_workloads(["semantickitti_0.05"]) or synthetic_workloads(("outdoor",))
    w = works[0]
    km = build_kernel_map(w.coords, KS, builder="sort")
    print(f"workload: {w.name} ({w.source}), {w.n} voxels, {km.in_idx.numel()} pairs")
    rows = []
    for c in args.channels:
        rows += run_channels(w, km, c, args.threads, args, spconv_available())
    add_ratios(rows)
    print_table(rows)
    wrong = [f"{r['variant']} ({r['channels']} ch, {r['threads']} thr)" for r in rows
             if r["check"] and r["check"]["status"] != OK]  # fmt: skip
    result = {"benchmark": "conv_variants", "workload": {"name": w.name, "source": w.source, "voxels": w.n,
              "map_entries_subm3": int(km.in_idx.numel())}, "rounds": args.rounds, "reps": args.reps,
              "machine": machine_info("cpu"), "rows": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"JSON: {args.out}" + (f"\nnot timed (wrong): {wrong}" if wrong else ""))
    return 1 if any(not v.startswith("spconv") for v in wrong) else 0  # spconv's CPU scatter races at 2 threads


if __name__ == "__main__":
    sys.exit(main())
