"""Peak RSS of a whole-network forward: MinkUNet-18 on torchsparse_lite vs the same network on spconv 2.3.8, CPU.

Usage:  python benchmarks/networks_rss.py [--cr 1.0] [--big 1000000] [--out benchmarks/results/networks_rss_cpu.json]

Every case runs in a fresh process (peak RSS is a process-lifetime figure):
the child loads the scan, builds the models of ``bench_networks_spconv.py``
(same weights, spconv's through ``interop.to_spconv_state_dict``), reads its
resident set, runs one forward with every map built in the call (eval,
``no_grad``; ours also forward + backward in train mode) and reports
``ru_maxrss`` minus the resident set before the call: the memory the forward
itself added, maps, layouts and workspaces included. Only after that does it
check the output against the other library (logits equal within 1e-4 of their
scale), so the check costs nothing measured; the forward + backward case
and the large input are not checked against spconv (it has no CPU backward
and is wrong on grids larger than one scan).

Cases: the SemanticKITTI scan at 0.05 m (94,444 voxels) for both libraries,
and about ``--big`` voxels (copies of the scan in the batch dimension) for
ours only: spconv's CPU build returns wrong pairs on grids larger than one
scan (see benchmarks/README.md). One thread on both sides. Writes JSON and a
bar chart (``networks_rss_cpu.png``) next to it.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCHSPARSE_LITE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
CASES = (("ours", "fwd", 1), ("spconv", "fwd", 1), ("ours", "fwd+bwd", 1), ("ours", "fwd", 0))  # 0: the big input


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(impl: str, mode: str, copies: int, cr: float) -> dict:
    """One measurement in this (fresh) process: peak RSS added by the call, then the output check."""
    sys.path.insert(0, str(HERE))
    import spconv.pytorch as sp  # noqa: PLC0415 - the peer is optional
    from bench_networks_spconv import build_models, load_scan  # noqa: PLC0415

    from torchsparse_lite import SparseTensor  # noqa: PLC0415

    torch.set_num_threads(1)
    feats, coords, source = load_scan(0.05)
    if copies > 1:
        coords = torch.cat([coords + torch.tensor([b, 0, 0, 0], dtype=coords.dtype) for b in range(copies)])
        feats = feats.repeat(copies, 1)
    shape = [(int(v) + 16) // 16 * 16 for v in coords[:, 1:].amax(0)]
    native, theirs, _ = build_models("minkunet18", cr)
    run_ours = lambda: native(SparseTensor(feats, coords))  # noqa: E731
    run_theirs = lambda: theirs(sp.SparseConvTensor(feats, coords, shape, copies))  # noqa: E731
    before = _rss_bytes()
    if mode == "fwd+bwd":
        native.train()
        out = native(SparseTensor(feats.clone().requires_grad_(True), coords))
        out.square().mean().backward()
        out = None
    else:
        with torch.no_grad():
            out = run_ours() if impl == "ours" else run_theirs()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    err = None
    if out is not None and copies == 1:
        with torch.no_grad():
            other = run_theirs() if impl == "ours" else run_ours()
        err = float((out - other).abs().max() / max(1.0, float(other.abs().max())))
    return {"impl": impl, "mode": mode, "voxels": int(coords.shape[0]), "source": source,
            "peak_rss_added_bytes": int(peak), "rel_err_vs_other": err}  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    from torchsparse_lite.bench.plots import saved_figure  # noqa: PLC0415 - matplotlib only at the end

    with saved_figure(path, (8, 4), dpi=120) as (_, ax):
        labels = [f"{r['impl']} {r['mode']}\n{r['voxels']:,} voxels" for r in rows]
        mib = [r["peak_rss_added_bytes"] / 2**20 for r in rows]
        ax.bar(range(len(rows)), mib, color=["tab:blue" if r["impl"] == "ours" else "tab:orange" for r in rows])
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylabel("peak RSS added by the call (MiB)")
        ax.set_title("MinkUNet-18, maps built in the call, 1 thread")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cr", type=float, default=1.0)
    ap.add_argument("--big", type=int, default=1_000_000, help="voxels of the large case (scan copies)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "networks_rss_cpu.json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        impl, mode, copies = args.child
        print(json.dumps(child(impl, mode, int(copies), args.cr)))
        return 0
    copies_big = max(1, round(args.big / 94_444))
    rows = []
    for impl, mode, one in CASES:
        copies = 1 if one else copies_big
        cmd = [sys.executable, __file__, "--cr", str(args.cr), "--child", impl, mode, str(copies)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{impl} {mode} x{copies}: failed\n{done.stderr[-2000:]}")
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if row["rel_err_vs_other"] is not None and row["rel_err_vs_other"] > 1e-4:
            print(f"{impl} {mode}: output differs from the other library ({row['rel_err_vs_other']:.3g})")
            return 1
        rows.append(row)
        print(f"{impl:<7} {mode:<8} {row['voxels']:>9,} voxels  {row['peak_rss_added_bytes'] / 2**20:8.0f} MiB")
    from torchsparse_lite.bench.env import machine_info  # noqa: PLC0415

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "networks_rss", "model": {"name": "minkunet18", "cr": args.cr},
                                    "rows": rows, "machine": machine_info("cpu")}, indent=1))  # fmt: skip
    plot(rows, args.out.with_suffix(".png"))
    print(f"JSON: {args.out}; PNG: {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
