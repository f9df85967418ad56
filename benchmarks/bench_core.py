"""Core CPU benchmark: kernel map, conv with a cached map, and both (map built in the call), ours vs spconv.

Usage:  python benchmarks/bench_core.py [--reps 7] [--threads 1 2] [--out benchmarks/results]

Workload: the SemanticKITTI scan voxelized at 0.05 m (94,444 voxels) when
../shared/data is present, else one synthetic outdoor scan. For every thread
count asked for, both libraries run on the same coordinates and the same
weights (converted to spconv's [Cout, kx, ky, kz, Cin] layout) and three
things are timed separately for a submanifold 3x3x3 conv:

* ``map``: building the kernel map (spconv: ``get_indice_pairs``);
* ``conv``: the conv on a map built beforehand (spconv: pairs cached in the
  ``indice_dict`` of a first call's output, as spconv users get them);
* ``total``: map + conv in one call, as a first layer on new coordinates runs.

Every output (maps as pair sets, conv features, our gradients against a
plain-autograd reference) is checked before anything is timed; spconv's CPU
build is only correct single-threaded, so at 2 threads its output is checked
again and reported ``wrong`` (not timed) when it differs. Prints a table of
medians with ratios ours/spconv and our 2-thread speed-up, and writes JSON to
``benchmarks/results/bench_core_cpu.json``.

Until 2026-12-01 this benchmark timed spconv's "conv" through a peer whose
pairs were never cached (spconv keeps them in the output's ``indice_dict``),
so spconv's conv figures included its map building; see benchmarks/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")  # the thread pool may grow to 2; each phase sets its count
# OpenMP's wait policy is left as users get it (libgomp spins a while after each parallel region). With
# OMP_WAIT_POLICY=PASSIVE every region pays a futex wake-up, and on this 2-core VM our 2-thread conv came
# out slower than 1 thread (2026-12-02); spinning workers, though, turn a 35 ms map build into 700 ms at
# 2 threads when anything else runs (2026-12-01): run it on a quiet machine, or set PASSIVE for both.
# the real scans: $TORCHSPARSE_LITE_DATA, else ../shared/data beside the repository
os.environ.setdefault("TORCHSPARSE_LITE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from torchsparse_lite.bench.compare import OK, WRONG, Check, check_close  # noqa: E402
from torchsparse_lite.bench.env import machine_info  # noqa: E402
from torchsparse_lite.bench.peers import SpconvConv, spconv_available  # noqa: E402
from torchsparse_lite.bench.reference import autograd_conv  # noqa: E402
from torchsparse_lite.bench.workloads import real_workloads, synthetic_workloads  # noqa: E402
from torchsparse_lite.functional.conv import sparse_conv  # noqa: E402
from torchsparse_lite.kmap import build_kernel_map  # noqa: E402
from torchsparse_lite.utils.timing import measure  # noqa: E402

KS = (3, 3, 3)


def spconv_pairs_match(kmap, pairs, pair_num) -> bool:
    """True when spconv's subm pairs equal ours offset by offset.

    spconv's taps are z-fastest (ours x-fastest) and its CPU subm map stores
    only the first half of the offsets (the rest are the mirrored pairs, the
    centre is the identity), so only those 13 offsets are compared directly;
    our mirrored half is checked to be the swap of our first half.
    """
    n = kmap.n_in
    half = kmap.volume // 2
    for k, (s, e) in enumerate(kmap.bounds):
        kx, ky, kz = k % 3, (k // 3) % 3, k // 9
        j = kx * 9 + ky * 3 + kz
        ours = torch.sort(kmap.in_idx[s:e] * n + kmap.out_idx[s:e]).values
        if j == half:
            if not torch.equal(ours, torch.arange(n) * (n + 1)):
                return False
            continue
        if j > half:  # spconv stores the mirror offset 26 - j with roles swapped
            j, flip = kmap.volume - 1 - j, True
        else:
            flip = False
        cnt = int(pair_num[j])
        src, dst = pairs[0, j, :cnt].long(), pairs[1, j, :cnt].long()
        if flip:
            src, dst = dst, src
        if cnt != e - s or not torch.equal(ours, torch.sort(src * n + dst).values):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)

    works = real_workloads(["semantickitti_0.05"]) or synthetic_workloads(("outdoor",))
    w = works[0]
    print(f"workload: {w.name} ({w.source}), {w.n} voxels")
    rows: list[dict] = []
    km = build_kernel_map(w.coords, KS, builder="sort")
    # ours first at every thread count, spconv after: loading spconv's runtime slows torch's threads
    for peer in (False, True):
        if peer and not spconv_available():
            break
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"-- {'spconv' if peer else 'ours'}, {threads} thread(s)")
            rows += map_rows(w.coords, km, threads, args, peer)
            for c in args.channels:
                rows += conv_rows(w.coords, km, c, threads, args, peer)
    torch.set_num_threads(1)
    print_table(rows)
    info = machine_info("cpu")
    result = {"benchmark": "bench_core", "workload": {"name": w.name, "source": w.source, "voxels": w.n,
                                                      "map_entries_subm3": int(km.in_idx.numel())},
              "reps": args.reps, "warmup": args.warmup, "machine": info, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_core_cpu.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\n{info['date_utc']}, {info['cpu']}, torch {info['versions']['torch']}, "
          f"spconv {info['versions']['spconv']}\nJSON: {path}")
    bad = [r for r in rows if r["check"] and r["check"]["status"] != OK and r["impl"].startswith("ours")]
    return 1 if bad else 0


def _row(op: str, impl: str, threads: int, timing, check, **extra) -> dict:
    return {"op": op, "impl": impl, "threads": threads, "check": check.as_dict() if check else None,
            "timing": timing.as_dict() if timing else None, **extra}


def map_rows(coords: torch.Tensor, km, threads: int, args, peer: bool) -> list[dict]:
    """Map building: ours (sort, hash) or spconv's (``peer``), pairs checked equal first."""
    rows = []
    if not peer:
        km_hash = build_kernel_map(coords, KS, builder="hash")
        same = torch.equal(km_hash.in_idx, km.in_idx) and torch.equal(km_hash.out_idx, km.out_idx)
        chk = Check(OK, note="hash and sort maps identical") if same else Check(WRONG, note="hash != sort map")
        for builder in ("sort", "hash"):
            t = measure(lambda b=builder: build_kernel_map(coords, KS, builder=b), warmup=args.warmup, reps=args.reps)
            rows.append(_row("map subm 3x3x3", f"ours-{builder}", threads, t, chk, map_entries=int(km.in_idx.numel())))
    else:
        peer = SpconvConv(torch.zeros(27, 1, 1), KS, (1, 1, 1), "submanifold", coords)
        _, pairs, pair_num = peer.build_map()
        ok = spconv_pairs_match(km, pairs, pair_num)
        chk = Check(OK, note="same pairs as ours") if ok else Check(WRONG, note="pairs differ from ours")
        t = measure(peer.build_map, warmup=args.warmup, reps=args.reps) if ok else None
        rows.append(_row("map subm 3x3x3", "spconv", threads, t, chk))
    return rows


def conv_rows(coords: torch.Tensor, km, c: int, threads: int, args, peer: bool) -> list[dict]:
    """Conv cached / total / fwd+bwd for ours, or cached / total for spconv (``peer``); outputs checked first."""
    g = torch.Generator().manual_seed(c)
    n = coords.shape[0]
    feats = torch.randn(n, c, generator=g)
    weight = torch.randn(27, c, c, generator=g) / (27 * c) ** 0.5
    ref = autograd_conv(feats, weight, km)
    chk = check_close(sparse_conv(feats, weight, km, backend="torch"), ref)
    tag = f"subm conv {c}->{c}"
    mk = {"warmup": args.warmup, "reps": args.reps}
    if peer:
        return _spconv_conv_rows(coords, feats, weight, ref, tag, threads, mk)
    cached = measure(lambda: sparse_conv(feats, weight, km, backend="torch"), **mk)
    total = measure(lambda: sparse_conv(feats, weight, build_kernel_map(coords, KS), backend="torch"), **mk)
    rows = [
        _row(f"{tag} conv", "ours", threads, cached, chk),
        _row(f"{tag} total", "ours", threads, total, chk),
        _row(f"{tag} fwd+bwd", "ours", threads, *_fwd_bwd(feats, weight, km, g, mk)),
    ]
    return rows


def _spconv_conv_rows(coords, feats, weight, ref, tag: str, threads: int, mk: dict) -> list[dict]:
    """spconv's conv with its pairs cached, and with the pairs built in the call; each checked before timing."""
    peer = SpconvConv(weight, KS, (1, 1, 1), "submanifold", coords)
    x = peer.prepare(feats)
    out, out_c = peer.forward(x)
    chk = check_close(out, ref, out_coords=out_c, ref_coords=coords)
    cached = measure(lambda: peer.forward(x), **mk) if chk.status == OK else None
    rows = [_row(f"{tag} conv", "spconv", threads, cached, chk)]
    out, out_c = peer.forward_total(peer.prepare_uncached(feats))
    chk = check_close(out, ref, out_coords=out_c, ref_coords=coords)
    total = measure(lambda: peer.forward_total(peer.prepare_uncached(feats)), **mk) if chk.status == OK else None
    rows.append(_row(f"{tag} total", "spconv", threads, total, chk))
    return rows


def _fwd_bwd(feats, weight, km, g, mk) -> tuple:
    """(Timing, Check) of our forward + backward, gradients checked against plain autograd."""
    fr, wr = feats.clone().requires_grad_(), weight.clone().requires_grad_()
    gout = torch.randn(feats.shape[0], weight.shape[2], generator=g)
    autograd_conv(fr, wr, km).backward(gout)
    fo, wo = feats.clone().requires_grad_(), weight.clone().requires_grad_()
    sparse_conv(fo, wo, km, backend="torch").backward(gout)
    cf, cw = check_close(fo.grad, fr.grad), check_close(wo.grad, wr.grad)

    def run():
        fo.grad = wo.grad = None
        sparse_conv(fo, wo, km, backend="torch").backward(gout)

    return measure(run, **mk), (cf if cf.status != OK else cw)


def print_table(rows: list[dict]) -> None:
    """Median per (op, impl, threads), IQR, check verdict, ours/spconv and our speed-up over 1 thread."""
    med = {(r["op"], r["impl"], r["threads"]): r["timing"]["median"] for r in rows if r["timing"]}
    print(f"\n| {'operation':<24} | {'impl':<11} | thr | {'median ms':>9} | {'IQR ms':>6} | {'check':<6} "
          f"| ours/spconv | vs 1 thread |")
    print(f"|{'-' * 26}|{'-' * 13}|-----|{'-' * 11}|{'-' * 8}|{'-' * 8}|{'-' * 13}|{'-' * 13}|")
    for r in rows:
        t, thr = r["timing"], r["threads"]
        chk = r["check"]["status"] if r["check"] else "wrong"
        ratio = speed = ""
        if t and r["impl"].startswith("ours") and (r["op"], "spconv", thr) in med:
            ratio = f"{t['median'] / med[(r['op'], 'spconv', thr)]:.2f}x"
        if t and thr != 1 and (r["op"], r["impl"], 1) in med:
            speed = f"{med[(r['op'], r['impl'], 1)] / t['median']:.2f}x faster"
        ms = f"{t['median'] * 1e3:9.1f}" if t else f"{'-':>9}"
        iqr = f"{t['iqr'] * 1e3:6.1f}" if t else f"{'-':>6}"
        print(f"| {r['op']:<24} | {r['impl']:<11} | {thr:>3} | {ms} | {iqr} | {chk:<6} | {ratio:>11} | {speed:>11} |")


if __name__ == "__main__":
    sys.exit(main())
