"""Layer benchmark: every implementation on one layer case, checked first, then timed.

For one (workload, layer) it measures, on identical inputs:

* map building with each of our builders (and spconv's index-pair generation);
* the conv with every (backend, grouping strategy, dtype, pass) of ours —
  the adaptive strategy with the epsilon/threshold our tuner picks;
* the peers (spconv) on the same coordinates and converted weights.

Every output is compared against a plain-autograd reference
(:func:`~torchsparse_lite.bench.reference.autograd_conv`) before timing; an
implementation whose output is wrong is recorded as ``"wrong"`` and not timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..functional.conv import sparse_conv
from ..grouping import GroupingConfig, GroupingTuner, plan_groups
from ..utils.timing import measure
from .compare import ERROR, OK, SKIPPED, WRONG, Check, check_close
from .layers import LayerCase, LayerSpec, make_case, map_over
from .memory import peak_memory
from .peers import SpconvConv, spconv_available, spconv_info
from .reference import autograd_conv
from .sweeps import epsilon_sweep
from .workloads import Workload

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TOL = {"float32": (1e-4, 1e-4), "float16": (2e-2, 2e-2), "bfloat16": (3e-2, 3e-2)}


@dataclass
class RunOptions:
    """What one benchmark run compares (see ``python -m torchsparse_lite bench --help``)."""

    strategies: tuple[str, ...] = ("separate", "fixed", "adaptive", "dense")
    builders: tuple[str, ...] = ("hash", "sort")
    backends: tuple[str, ...] = ("torch", "triton")
    dtypes: tuple[str, ...] = ("float32",)
    passes: tuple[str, ...] = ("fwd", "fwdbwd")
    peers: tuple[str, ...] = ("spconv",)
    warmup: int = 1
    reps: int = 5
    device: str = "cpu"
    memory: bool = True
    peer_check_trials: int = 3
    tuner: GroupingTuner = field(default_factory=lambda: GroupingTuner(repeats=2))


def _base(w: Workload, batch: int, spec: LayerSpec, case: LayerCase) -> dict:
    return {
        "kind": "layer", "workload": w.name, "source": w.source, "batch": batch, "layer": spec.label,
        "layer_name": spec.name, "mode": spec.mode, "cin": spec.cin, "cout": spec.cout,
        "n_in": case.kmap.n_in, "n_out": case.kmap.n_out, "map_entries": int(case.kmap.in_idx.numel()),
    }  # fmt: skip


def _timed(rec: dict, fn: Callable[[], object], opts: RunOptions) -> dict:
    """Add timing (and peak memory) of ``fn`` to ``rec``; errors become status 'error'."""
    try:
        t = measure(fn, warmup=opts.warmup, reps=opts.reps, device=opts.device)
        rec["timing"] = t.as_dict()
        if opts.memory:
            rec["peak_mem_bytes"], rec["mem_method"] = peak_memory(fn, opts.device)
    except Exception as exc:  # noqa: BLE001 - any failure of a timed impl is reported, not fatal
        rec["check"] = Check(ERROR, note=f"{type(exc).__name__}: {exc}").as_dict()
    return rec


def _grad_check(feats, weight, run, gout, ref_grads, rtol, atol) -> Check:
    f = feats.detach().clone().requires_grad_()
    wt = weight.detach().clone().requires_grad_()
    run(f, wt).backward(gout)
    cf = check_close(f.grad, ref_grads[0], rtol=rtol, atol=atol)
    cw = check_close(wt.grad, ref_grads[1], rtol=rtol, atol=atol)
    if cf.status != OK:
        return Check(cf.status, cf.max_abs_err, cf.tol, "grad feats: " + cf.note)
    if cw.status != OK:
        return Check(cw.status, cw.max_abs_err, cw.tol, "grad weight: " + cw.note)
    return Check(OK, max(cf.max_abs_err or 0.0, cw.max_abs_err or 0.0), cf.tol)


def _fwd_bwd_fn(feats, weight, run, gout):
    f = feats.detach().clone().requires_grad_()
    wt = weight.detach().clone().requires_grad_()

    def fn():
        f.grad = wt.grad = None
        run(f, wt).backward(gout)

    return fn


def bench_maps(w: Workload, batch: int, spec: LayerSpec, case: LayerCase, opts: RunOptions) -> list[dict]:
    """Time our map builders on this layer (checked equal to the hash map first)."""
    out = []
    ref = case.kmap
    # The layer's own coordinates, as spconv's peer gets them: deriving them
    # from the stride-1 voxels is not part of the layer's map (before
    # 2026-12-02 it was timed in, a unique of all voxels, ~10 ms here).
    source = case.fine_coords if spec.mode == "transposed" else case.in_coords
    for builder in opts.builders:
        rec = {**_base(w, batch, spec, case), "kind": "map", "impl": f"ours-{builder}", "pass": "map",
               "dtype": "-", "backend": "torch", "builder": builder}
        km = map_over(source, spec, builder)
        same = torch.equal(km.in_idx, ref.in_idx) and torch.equal(km.out_idx, ref.out_idx)
        rec["check"] = Check(OK if same else WRONG, note="" if same else "differs from the hash map").as_dict()
        if same:
            _timed(rec, lambda b=builder: map_over(source, spec, b), opts)
        out.append(rec)
    return out


def _ours_records(w, batch, spec, case, opts, dtype, ref, ref_grads, gout) -> list[dict]:
    out = []
    rtol, atol = TOL[dtype]
    dt = DTYPES[dtype]
    feats, weight = case.feats.to(dt), case.weight.to(dt)
    for backend in opts.backends:
        if backend == "triton" and torch.device(opts.device).type != "cuda":
            out.append({**_base(w, batch, spec, case), "impl": "ours-triton", "backend": "triton", "dtype": dtype,
                        "pass": "-", "check": Check(SKIPPED, note="Triton runs only in the interpreter on CPU; "
                                                    "not a timing path").as_dict()})
            continue
        for strategy in opts.strategies:
            cfg = GroupingConfig(strategy)
            if strategy == "adaptive":  # the tuner's pick for this layer (measured once per signature)
                cfg = opts.tuner.choose(
                    feats, weight, case.kmap,
                    lambda c, b=backend: sparse_conv(feats, weight, case.kmap, backend=b, grouping=c), tag=backend,
                )  # fmt: skip
            plan = plan_groups(case.kmap.counts, cfg, case.kmap.identity_offset, case.kmap.symmetric)
            work = plan.work(spec.cin, spec.cout)
            for pas in opts.passes:
                rec = {**_base(w, batch, spec, case), "impl": f"ours-{backend}-{strategy}", "backend": backend,
                       "strategy": strategy, "epsilon": cfg.epsilon if strategy == "adaptive" else None,
                       "threshold": cfg.threshold if strategy == "adaptive" else None, "dtype": dtype, "pass": pas,
                       "padded_flop_overhead": work.overhead, "launches": work.launches}

                def run(f, wt, cfg=cfg, backend=backend):
                    return sparse_conv(f, wt, case.kmap, backend=backend, grouping=cfg)

                try:
                    if pas == "fwd":
                        with torch.no_grad():
                            chk = check_close(run(feats, weight), ref, rtol=rtol, atol=atol)
                        fn = lambda run=run: run(feats, weight)  # noqa: E731
                    else:
                        chk = _grad_check(feats, weight, run, gout.to(dt), ref_grads, rtol, atol)
                        fn = _fwd_bwd_fn(feats, weight, run, gout.to(dt))
                except Exception as exc:  # noqa: BLE001
                    chk, fn = Check(ERROR, note=f"{type(exc).__name__}: {exc}"), None
                rec["check"] = chk.as_dict()
                if chk.status == OK:
                    if pas == "fwd":
                        with torch.no_grad():
                            _timed(rec, fn, opts)
                    else:
                        _timed(rec, fn, opts)
                out.append(rec)
    return out


def _spconv_records(w, batch, spec, case, opts, ref) -> list[dict]:
    info = spconv_info()
    base = {**_base(w, batch, spec, case), "impl": "spconv", "backend": info["distribution"], "dtype": "float32",
            "pass": "fwd", "threads": torch.get_num_threads()}
    dev = torch.device(opts.device)
    if dev.type == "cuda" and not info["cuda_build"]:
        return [{**base, "check": Check(SKIPPED, note="installed spconv is the CPU build").as_dict()}]
    coords = case.fine_coords if spec.mode == "transposed" else case.in_coords
    try:
        peer = SpconvConv(case.weight.float(), spec.kernel_size, spec.stride, spec.mode, coords.to(dev))
        x = peer.prepare(case.feats.float(), case.in_coords)
        trials = opts.peer_check_trials if torch.get_num_threads() > 1 else 1
        bad = 0
        chk = Check(OK)
        for _ in range(trials):
            out, out_c = peer.forward(x)
            c = check_close(out, ref, out_coords=out_c, ref_coords=case.kmap.out_coords)
            if c.status != OK:
                bad, chk = bad + 1, c
        if bad:
            chk = Check(WRONG, chk.max_abs_err, chk.tol,
                        f"wrong in {bad}/{trials} runs at {torch.get_num_threads()} threads: {chk.note}")
        elif trials > 1:
            chk = Check(OK, chk.max_abs_err, chk.tol, f"right in {trials}/{trials} runs at "
                        f"{torch.get_num_threads()} threads (its CPU scatter races; may still fail)")
    except Exception as exc:  # noqa: BLE001 - a failing peer is reported, not fatal
        return [{**base, "check": Check(ERROR, note=f"{type(exc).__name__}: {exc}").as_dict()}]
    recs = [{**base, "check": chk.as_dict()}]
    if chk.status == OK:
        _timed(recs[0], lambda: peer.forward(x), opts)
    if spec.mode != "transposed":
        # spconv's pairs are validated through its conv output (its map layout differs from ours)
        mcheck = Check(chk.status, chk.max_abs_err, chk.tol, ("via its conv output: " + chk.note).strip(": "))
        mrec = {**base, "kind": "map", "pass": "map", "dtype": "-", "check": mcheck.as_dict()}
        if chk.status == OK:
            _timed(mrec, peer.build_map, opts)
        recs.append(mrec)
    return recs


def bench_layer(w: Workload, batch: int, spec: LayerSpec, opts: RunOptions,
                sweeps: list[dict] | None = None) -> list[dict]:
    """All comparisons for one layer on one (batched) workload; returns one record per measurement.

    When ``sweeps`` is a list, the layer's padded-FLOP-overhead-vs-epsilon
    sweep (:func:`~torchsparse_lite.bench.sweeps.epsilon_sweep`) is appended to it.
    """
    case = make_case(w.coords, spec, device=opts.device)
    if sweeps is not None:
        sweeps.append({"layer": spec.label, "workload": w.name, **epsilon_sweep(case.kmap, spec.cin, spec.cout)})
    recs: list[dict] = []
    if spec.mode != "transposed":
        recs += bench_maps(w, batch, spec, case, opts)
    f32, w32 = case.feats.float(), case.weight.float()
    with torch.no_grad():
        ref = autograd_conv(f32, w32, case.kmap)
    ref_grads = gout = None
    if "fwdbwd" in opts.passes:
        g = torch.Generator().manual_seed(1)
        gout = torch.randn(ref.shape, generator=g).to(ref.device)
        fr, wr = f32.clone().requires_grad_(), w32.clone().requires_grad_()
        autograd_conv(fr, wr, case.kmap).backward(gout)
        ref_grads = (fr.grad, wr.grad)
    for dtype in opts.dtypes:
        recs += _ours_records(w, batch, spec, case, opts, dtype, ref, ref_grads, gout)
    if "spconv" in opts.peers and spconv_available():
        recs += _spconv_records(w, batch, spec, case, opts, ref)
    return recs
