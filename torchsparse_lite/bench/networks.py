"""Whole-network benchmark: MinkUNet and the sparse ResNet backbone, forward and forward+backward."""

from __future__ import annotations

import importlib

import torch

from ..config import use_config
from ..grouping import GroupingTuner
from ..tensor import SparseTensor
from ..utils.timing import measure
from .compare import ERROR, OK, SKIPPED, Check, check_close
from .memory import peak_memory
from .workloads import Workload

NETWORKS = ("minkunet", "resnet")


def build_network(name: str) -> torch.nn.Module:
    """MinkUNet-18 (4 -> 19 classes) or the SparseResNet-21 backbone (4 input channels)."""
    models = importlib.import_module("torchsparse_lite.models")
    if name == "minkunet":
        return models.MinkUNet(4, 19)
    if name == "resnet":
        return models.SparseResNet(21, 4)
    raise ValueError(f"network must be one of {NETWORKS}, got {name!r}")


def _output(y) -> torch.Tensor:
    """The tensor to check/backprop: logits, or the last stage's features of a backbone."""
    if isinstance(y, list):
        y = y[-1]
    return y.feats if isinstance(y, SparseTensor) else y


def bench_network(name: str, w: Workload, batch: int, *, strategies: tuple[str, ...], backends: tuple[str, ...],
                  passes: tuple[str, ...], device: str = "cpu", warmup: int = 1, reps: int = 3,
                  memory: bool = True) -> list[dict]:
    """Time one network on one workload per (backend, strategy, pass); outputs checked against separate/torch.

    Passes: ``"fwd"`` (maps cached after the warm-up), ``"fwd+maps"`` (a fresh
    tensor every call, so kernel maps are rebuilt), ``"fwdbwd"`` (maps cached).
    """
    torch.manual_seed(0)
    net = build_network(name).to(device).eval()
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(w.n, 4, generator=g).to(device)
    coords = w.coords.to(device)
    x = SparseTensor(feats, coords)
    with torch.no_grad(), use_config(backend="torch", grouping="separate"):
        ref = _output(net(x)).float()
    out = []
    for backend in backends:
        for strategy in strategies:
            base = {"kind": "network", "workload": w.name, "source": w.source, "batch": batch, "layer": name,
                    "n_in": w.n, "impl": f"ours-{backend}-{strategy}", "backend": backend, "strategy": strategy,
                    "dtype": "float32"}
            if backend == "triton" and torch.device(device).type != "cuda":
                out.append({**base, "pass": "-", "check": Check(SKIPPED, note="Triton is not timed on CPU").as_dict()})
                continue
            grouping = GroupingTuner(repeats=2) if strategy == "adaptive" else strategy
            with use_config(backend=backend, grouping=grouping):
                try:
                    with torch.no_grad():
                        chk = check_close(_output(net(x)), ref, rtol=1e-3, atol=1e-3)
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    chk = Check(ERROR, note=f"{type(exc).__name__}: {exc}")
                for pas in passes:
                    rec = {**base, "pass": pas, "check": chk.as_dict()}
                    if chk.status == OK:
                        fn = _pass_fn(net, x, pas)
                        rec["timing"] = measure(fn, warmup=warmup, reps=reps, device=device).as_dict()
                        if memory:
                            rec["peak_mem_bytes"], rec["mem_method"] = peak_memory(fn, device)
                    out.append(rec)
    return out


def _pass_fn(net: torch.nn.Module, x: SparseTensor, pas: str):
    if pas == "fwd":
        def fn():
            with torch.no_grad():
                return net(x)
    elif pas == "fwd+maps":
        def fn():
            with torch.no_grad():
                return net(SparseTensor(x.feats, x.coords.clone(), validate=False))
    elif pas == "fwdbwd":
        def fn():
            net.zero_grad(set_to_none=True)
            _output(net(x)).float().square().mean().backward()
    else:
        raise ValueError(f"network pass must be 'fwd', 'fwd+maps' or 'fwdbwd', got {pas!r}")
    return fn
