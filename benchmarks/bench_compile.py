"""What ``torch.compile`` buys on the CPU: MinkUNet eager vs compiled (inductor), forward and forward+backward.

Usage:  python benchmarks/bench_compile.py [--cr 0.5] [--voxel-size 0.05] [--reps 5] [--threads 1] [--out DIR]

Workload: SemanticKITTI seq 00 scan 000000 (``$TORCHSPARSE_LITE_DATA`` or
../shared/data) at ``--voxel-size`` (0.05 m: 94,444 voxels); without the scan
the benchmark prints why and exits 0, writing nothing. Network: MinkUNet-18
at width ``--cr``, 19 classes, seeded, the same weights on both sides.

Every call gets a fresh input tensor, so every kernel map is built inside
the forward (what a new scan costs, in training and in inference), on both
sides. The compiled network is ``torch.compile(net, fullgraph=True)`` with
the default ``inductor`` backend: the map builders and the sparse convs are
the same custom ops as eager runs (``torchsparse_lite.ops``); what compiling
can change is everything around them (batch norm, ReLU, residual adds and
concatenations fused into generated C++ loops, no Python between layers).

Checked before anything is timed (a side that differs is reported ``wrong``
and not timed): the compiled logits against eager's (``bench.compare.check_close``,
1e-4 of their scale) and, in training, every parameter's gradient against a
float64 run of the same step: the compiled one must be within twice eager's
own relative error (+1e-6). Inductor computes batch norm in its own order,
and on this scan eager's fp32 gradients are the less exact ones (the first
conv's weight gradient 1.2e-3 off float64 in eager, 5.6e-5 compiled), so a
direct compiled-vs-eager bound would measure eager's error. (With the
``aot_eager`` backend the tests find outputs and gradients equal to the bit.)
Timing: ``utils.timing.measure``, one call
per sample, eager and compiled alternating, ``--reps`` samples after the
warm-up (the first compiled call, whose duration is reported as the compile
time); median and IQR. Writes ``compile_cpu.json`` and ``compile_cpu.png``
under ``--out`` (default ``benchmarks/results/``) and prints the ratios.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TORCHSPARSE_LITE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from torchsparse_lite import SparseTensor, sparse_quantize  # noqa: E402
from torchsparse_lite.bench.compare import OK, WRONG, Check, check_close  # noqa: E402
from torchsparse_lite.bench.env import machine_info  # noqa: E402
from torchsparse_lite.models import MinkUNet  # noqa: E402
from torchsparse_lite.utils.timing import measure, summarize  # noqa: E402

SCAN = "semantickitti/000000.bin"


def load_scan(voxel: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(feats [N, 4] xyz + remission, coords [N, 4] int32) of the real scan, or None when it is absent."""
    path = Path(os.environ["TORCHSPARSE_LITE_DATA"]) / SCAN
    if not path.exists():
        return None
    pts = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    q = sparse_quantize(pts[:, :3], voxel)
    coords = torch.cat([torch.zeros(len(q.coords), 1, dtype=torch.int32), q.coords.to(torch.int32)], 1)
    return torch.from_numpy(pts[q.index.numpy()]), coords


def make_net(cr: float, train: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    net = MinkUNet(4, 19, cr=cr)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm1d):  # non-trivial statistics, so eval mode normalises for real
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.train(train)


def step_fn(net: torch.nn.Module, feats: torch.Tensor, coords: torch.Tensor, train: bool) -> Callable:
    """One forward (eval, no grad) or forward + backward of a sum-of-squares loss (train), maps built inside."""

    def fwd() -> torch.Tensor:
        with torch.no_grad():
            return net(SparseTensor(feats, coords))

    def fwd_bwd() -> torch.Tensor:
        net.zero_grad(set_to_none=True)
        logits = net(SparseTensor(feats, coords))
        logits.square().mean().backward()
        return logits.detach()

    return fwd_bwd if train else fwd


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm().clamp_min(1e-30))


def check_gradients(nets: tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]) -> Check:
    """Compiled gradients at least as exact as eager's: each within 2x eager's relative error to float64 (+1e-6)."""
    eager, compiled, ref = (dict(n.named_parameters()) for n in nets)
    worst, note = 0.0, ""
    for name, r in ref.items():
        if r.grad is None:
            continue
        e, c = _rel(eager[name].grad, r.grad), _rel(compiled[name].grad, r.grad)
        if c > 2 * e + 1e-6:
            return Check(WRONG, c, 2 * e + 1e-6, note=f"gradient of {name}: {c:.2g} off float64, eager {e:.2g}")
        if c > worst:
            worst, note = c, f"largest relative gradient error to float64: compiled {c:.2g} ({name}; eager {e:.2g})"
    return Check(OK, worst, None, note=note)


def run_mode(feats: torch.Tensor, coords: torch.Tensor, cr: float, train: bool, reps: int) -> dict:
    """Compile, check, then time eager and compiled alternately; the row of one mode."""
    eager_net = make_net(cr, train)
    twin = copy.deepcopy(eager_net)
    eager = step_fn(eager_net, feats, coords, train)
    compiled = step_fn(torch.compile(twin, fullgraph=True), feats, coords, train)
    t0 = time.perf_counter()
    got = compiled()
    compile_s = time.perf_counter() - t0
    want = eager()
    check = check_close(got, want, rtol=1e-4, atol=1e-5)
    if check.status == OK and train:
        ref = make_net(cr, train).double()
        step_fn(ref, feats.double(), coords, train)()
        check = check_gradients((eager_net, twin, ref))
    row = {"mode": "fwd+bwd" if train else "fwd", "compile_s": compile_s, "check": check.as_dict()}
    if check.status != OK:
        return row
    samples: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(reps):
        for name, fn in (("eager", eager), ("compiled", compiled)):
            samples[name].append(measure(fn, warmup=0, reps=1).median)
    for name, values in samples.items():
        row[name] = summarize(values).as_dict()
    row["ratio_compiled_over_eager"] = row["compiled"]["median"] / row["eager"]["median"]
    return row


def plot(rows: list[dict], path: Path, title: str) -> None:
    from torchsparse_lite.bench.plots import saved_figure  # noqa: PLC0415 - matplotlib only at the end

    with saved_figure(path, (6, 3.6), dpi=120) as (_, ax):
        timed = [r for r in rows if "eager" in r]
        x = np.arange(len(timed))
        for i, side in enumerate(("eager", "compiled")):
            med = [r[side]["median"] * 1e3 for r in timed]
            err = [[(r[side]["median"] - r[side]["q1"]) * 1e3 for r in timed],
                   [(r[side]["q3"] - r[side]["median"]) * 1e3 for r in timed]]  # fmt: skip
            bars = ax.bar(x + (i - 0.5) * 0.38, med, 0.38, yerr=err, capsize=3, label=side)
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        top = max((r[side]["q3"] for r in timed for side in ("eager", "compiled")), default=0.0) * 1e3
        for j, r in enumerate(timed):
            ax.text(x[j], top * 1.1, f"compiled / eager {r['ratio_compiled_over_eager']:.2f}", ha="center", fontsize=9)
        ax.set_ylim(0, top * 1.25 or 1.0)
        ax.set_xticks(x, [r["mode"] for r in timed])
        ax.set_ylabel("ms per call (median, IQR)")
        ax.set_title(title, fontsize=9)
        ax.legend()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cr", type=float, default=0.5, help="MinkUNet width multiplier")
    ap.add_argument("--voxel-size", type=float, default=0.05)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scan = load_scan(args.voxel_size)
    if scan is None:
        print(f"skipped: the real scan {SCAN} is not under {os.environ['TORCHSPARSE_LITE_DATA']}; nothing written")
        return 0
    feats, coords = scan
    print(f"{SCAN} at {args.voxel_size} m: {len(coords)} voxels; MinkUNet-18 cr {args.cr}, {args.threads} thread(s)")
    rows = [run_mode(feats, coords, args.cr, train, args.reps) for train in (False, True)]
    for r in rows:
        if "eager" not in r:
            print(f"{r['mode']:<8} {r['check']['status']}: {r['check']['note']} (not timed)")
            continue
        eager_ms, compiled_ms = r["eager"]["median"] * 1e3, r["compiled"]["median"] * 1e3
        checked = r["check"]["note"] or f"logits max |err| {r['check']['max_abs_err']:.2g}"
        print(f"{r['mode']:<8} eager {eager_ms:8.1f} ms   compiled {compiled_ms:8.1f} ms   compiled/eager "
              f"{r['ratio_compiled_over_eager']:.2f}   (compile {r['compile_s']:.0f} s; {checked})")  # fmt: skip
    info = machine_info("cpu")
    result = {"benchmark": "compile", "workload": {"scan": SCAN, "voxel_size": args.voxel_size, "voxels": len(coords)},
              "model": {"name": "minkunet18", "cr": args.cr, "classes": 19}, "backend": "inductor",
              "fullgraph": True, "threads": args.threads, "reps": args.reps, "rows": rows, "machine": info}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compile_cpu.json").write_text(json.dumps(result, indent=1))
    title = f"MinkUNet-18 cr {args.cr}, {len(coords)} voxels, maps built per call, {args.threads} thread(s), CPU"
    plot(rows, args.out / "compile_cpu.png", title)
    print(f"{info['date_utc']}, {info['cpu']}, torch {info['versions']['torch']}; "
          f"{args.out / 'compile_cpu.json'}, {args.out / 'compile_cpu.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
