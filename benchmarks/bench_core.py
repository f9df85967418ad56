"""Core CPU benchmark: kernel-map building and one submanifold 3x3x3 conv, ours vs spconv.

Usage:  python benchmarks/bench_core.py [--reps 5] [--out benchmarks/results]

Workload: the SemanticKITTI scan voxelized at 0.05 m (94,444 voxels) when
../shared/data is present, else one synthetic outdoor scan. Both libraries
run single-threaded (spconv's multi-threaded CPU SubMConv races and returns
wrong sums), on the same coordinates and the same weights converted to
spconv's [Cout, kx, ky, kz, Cin] layout. Every output (maps as pair sets,
conv features, our gradients against a plain-autograd reference) is checked
before anything is timed. Prints a table of medians with ratios ours/spconv
and writes JSON to ``benchmarks/results/bench_core_cpu.json``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # must precede the spconv/torch imports

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from torchsparse_lite.bench.compare import OK, WRONG, Check, check_close  # noqa: E402
from torchsparse_lite.bench.env import machine_info  # noqa: E402
from torchsparse_lite.bench.peers import SpconvConv, spconv_available  # noqa: E402
from torchsparse_lite.bench.reference import autograd_conv  # noqa: E402
from torchsparse_lite.bench.timing import measure  # noqa: E402
from torchsparse_lite.bench.workloads import real_workloads, synthetic_workloads  # noqa: E402
from torchsparse_lite.functional.conv import sparse_conv  # noqa: E402
from torchsparse_lite.kmap import build_kernel_map  # noqa: E402

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
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)

    works = real_workloads(["semantickitti_0.05"]) or synthetic_workloads(("outdoor",))
    w = works[0]
    coords = w.coords
    n = w.n
    print(f"workload: {w.name} ({w.source}), {n} voxels; torch threads {torch.get_num_threads()}")
    rows: list[dict] = []
    has_spconv = spconv_available()

    def add(op, impl, timing, check, extra=None):
        rows.append({"op": op, "impl": impl, "check": check.as_dict() if check else None,
                     "timing": timing.as_dict() if timing else None, **(extra or {})})

    # --------------------------------------------------------------- maps
    km_hash = build_kernel_map(coords, KS, builder="hash")
    km_sort = build_kernel_map(coords, KS, builder="sort")
    same = torch.equal(km_hash.in_idx, km_sort.in_idx) and torch.equal(km_hash.out_idx, km_sort.out_idx)
    ok_check = Check(OK, note="hash and sort maps identical") if same else Check(WRONG, note="hash != sort map")
    entries = int(km_hash.in_idx.numel())
    for builder in ("hash", "sort"):
        t = measure(lambda b=builder: build_kernel_map(coords, KS, builder=b), warmup=args.warmup, reps=args.reps)
        add("map subm 3x3x3", f"ours-{builder}", t, ok_check, {"map_entries": entries})
    if has_spconv:
        peer = SpconvConv(torch.zeros(27, 1, 1), KS, (1, 1, 1), "submanifold", coords)
        _, pairs, pair_num = peer.build_map()
        match = spconv_pairs_match(km_hash, pairs, pair_num)
        chk = Check(OK, note="same pairs as ours") if match else Check(WRONG, note="pairs differ from ours")
        t = measure(peer.build_map, warmup=args.warmup, reps=args.reps) if match else None
        add("map subm 3x3x3", "spconv", t, chk, {"map_entries": 2 * int(pair_num.sum()) + coords.shape[0]})

    # --------------------------------------------------------------- convs
    g = torch.Generator().manual_seed(0)
    for c in args.channels:
        feats = torch.randn(n, c, generator=g)
        weight = torch.randn(27, c, c, generator=g) / (27 * c) ** 0.5
        ref = autograd_conv(feats, weight, km_hash)
        op = f"subm conv {c}->{c} fwd"
        ours_out = sparse_conv(feats, weight, km_hash, backend="torch")
        chk = check_close(ours_out, ref)
        add(op, "ours", measure(lambda f=feats, wt=weight: sparse_conv(f, wt, km_hash, backend="torch"),
                                warmup=args.warmup, reps=args.reps), chk)
        if has_spconv:
            peer = SpconvConv(weight, KS, (1, 1, 1), "submanifold", coords)
            x = peer.prepare(feats)
            out, out_c = peer.forward(x)
            chk = check_close(out, ref, out_coords=out_c, ref_coords=coords)
            t = measure(lambda p=peer, xx=x: p.forward(xx), warmup=args.warmup, reps=args.reps) \
                if chk.status == OK else None
            add(op, "spconv", t, chk)
        # forward + backward (ours only: spconv's backward needs CUDA)
        fr, wr = feats.clone().requires_grad_(), weight.clone().requires_grad_()
        gout = torch.randn(n, c, generator=g)
        autograd_conv(fr, wr, km_hash).backward(gout)
        fo, wo = feats.clone().requires_grad_(), weight.clone().requires_grad_()
        sparse_conv(fo, wo, km_hash, backend="torch").backward(gout)
        cf, cw = check_close(fo.grad, fr.grad), check_close(wo.grad, wr.grad)
        chk = cf if cf.status != OK else cw

        def fwd_bwd(fo=fo, wo=wo, gout=gout):
            fo.grad = wo.grad = None
            sparse_conv(fo, wo, km_hash, backend="torch").backward(gout)

        add(f"subm conv {c}->{c} fwd+bwd", "ours", measure(fwd_bwd, warmup=args.warmup, reps=args.reps), chk)
        if has_spconv:
            add(f"subm conv {c}->{c} fwd+bwd", "spconv", None, None, {"note": "spconv backward needs CUDA"})

    # --------------------------------------------------------------- report
    print_table(rows)
    info = machine_info("cpu")
    result = {"benchmark": "bench_core", "workload": {"name": w.name, "source": w.source, "voxels": n,
                                                      "map_entries_subm3": entries},
              "reps": args.reps, "warmup": args.warmup, "machine": info, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_core_cpu.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\n{info['date_utc']}, {info['cpu']}, 1 thread, torch {info['versions']['torch']}, "
          f"spconv {info['versions']['spconv']}\nJSON: {path}")
    bad = [r for r in rows if r["check"] and r["check"]["status"] != OK and r["impl"].startswith("ours")]
    return 1 if bad else 0


def print_table(rows: list[dict]) -> None:
    """Median time per (op, impl), IQR, check verdict and the ours/spconv ratio."""
    spc = {r["op"]: r["timing"]["median"] for r in rows if r["impl"] == "spconv" and r["timing"]}
    print(f"\n| {'operation':<26} | {'impl':<11} | {'median ms':>10} | {'IQR ms':>7} | {'check':<6} | ours/spconv |")
    print(f"|{'-' * 28}|{'-' * 13}|{'-' * 12}|{'-' * 9}|{'-' * 8}|{'-' * 13}|")
    for r in rows:
        t = r["timing"]
        med = f"{t['median'] * 1e3:10.1f}" if t else f"{'-':>10}"
        iqr = f"{t['iqr'] * 1e3:7.1f}" if t else f"{'-':>7}"
        chk = r["check"]["status"] if r["check"] else ("n/a" if r.get("note") else "wrong")
        ratio = ""
        if t and r["impl"].startswith("ours") and r["op"] in spc:
            ratio = f"{t['median'] / spc[r['op']]:.2f}x"
        elif r.get("note"):
            ratio = r["note"]
        print(f"| {r['op']:<26} | {r['impl']:<11} | {med} | {iqr} | {chk:<6} | {ratio:>11} |")


if __name__ == "__main__":
    sys.exit(main())
