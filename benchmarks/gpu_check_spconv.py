"""spconv 2.3.8 as the peer of ``benchmarks/gpu_check.py``: the same layers and the same MinkUNet-18.

spconv is imported lazily: without it every function here returns no rows and
:func:`status` says ``"spconv: not installed"``. Layers run through the
benchmark's :class:`~torchsparse_lite.bench.peers.SpconvConv` (our weights
converted, its own maps and kernels). The network is *our* MinkUNet-18
executed by spconv: :class:`SpconvMinkUNet` walks our module tree (the
blocks' data flow is fixed: sequential, residual add, up-sample then concat)
and runs every conv as a spconv module holding the converted weight, while
BatchNorm, ReLU and the classifier are our modules applied to spconv's
features. Maps are shared the spconv way: one ``indice_key`` per submanifold
level and kernel size, and each inverse conv reuses the key of the strided
conv it inverts. spconv 2.3.8 runs a 1x1x1 conv as
``mm(feats, weight.view(Cin, Cout))``, i.e. it reads its ``[Cout, 1, 1, 1, Cin]``
weight as ``[Cin, Cout]`` memory, so those weights are copied in that order.
Outputs are checked against ours before anything is timed; a spconv error
(an unsupported dtype, say) or a spconv output that differs is a ``skip``
with the message and the error, not a failure of our engine.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch
from gpu_check_common import NET_TOL, PASS, PRECISIONS, SKIP, rel_err, row
from torch import nn

from torchsparse_lite.bench.compare import align_rows
from torchsparse_lite.kmap.offsets import padding as default_padding
from torchsparse_lite.utils.timing import measure


def available() -> bool:
    return importlib.util.find_spec("spconv") is not None


def status(device: torch.device) -> str:
    """One line for the report: version and build, or ``spconv: not installed``."""
    if not available():
        return "spconv: not installed"
    from torchsparse_lite.bench.peers import spconv_info  # noqa: PLC0415

    info = spconv_info()
    build = "CUDA build" if info["cuda_build"] else "CPU build"
    usable = device.type != "cuda" or info["cuda_build"]
    return f"spconv {info['version']} ({info['distribution']}, {build})" + ("" if usable else ": not usable on GPU")


def _usable(device: torch.device, precision: str) -> bool:
    """spconv has no TF32 switch of its own; on the CPU (dry runs) only fp32 (no bf16 kernels, slow fp16)."""
    if not available() or precision == "tf32" or (device.type == "cpu" and precision != "fp32"):
        return False
    return "not usable" not in status(device)


def peer_tol(precision: str) -> float:
    """spconv may run fp32 on TF32 tensor cores (its own choice), so its fp32 is held to the TF32 limit."""
    return NET_TOL["tf32" if precision == "fp32" else precision]


def _ms(fn, device, reps: int) -> float:
    return measure(fn, warmup=1, reps=reps, device=device).median * 1e3


def _peer_error(section, case, fields, exc) -> list[dict]:
    return [row(section, case, SKIP, **fields, note=f"spconv raised {type(exc).__name__}: {exc}"[:300])]


def layer_rows(case, spec, base, precision, ref, device, reps: int) -> list[dict]:
    """spconv's forward (pairs cached) and pair building on one layer case, output checked first."""
    if not _usable(device, precision):
        return []
    from torchsparse_lite.bench.peers import SpconvConv  # noqa: PLC0415

    dtype = PRECISIONS[precision][0]
    fields = {**base, "impl": "spconv", "precision": precision, "grouping": "-", "dataflow": "-"}
    try:
        coords = case.fine_coords if spec.mode == "transposed" else case.in_coords
        conv = SpconvConv(case.weight.float(), spec.kernel_size, spec.stride, spec.mode, coords)
        # SpconvConv builds fp32 modules; its layers run in the dtype of their weights
        conv._module = conv._module.to(dtype)
        conv._down = None if conv._down is None else conv._down.to(dtype)
        x = conv.prepare(case.feats.to(dtype), case.in_coords)
        out, out_coords = conv.forward(x)
    except Exception as exc:  # noqa: BLE001 - the peer's limits are reported, not fatal
        return _peer_error("layers", spec.label, fields, exc)
    perm = align_rows(case.kmap.out_coords.cpu(), out_coords.cpu())
    if perm is None:
        return [row("layers", spec.label, SKIP, **fields, note="spconv's output coordinates differ from ours")]
    err = rel_err(out[perm.to(out.device)], ref)
    if err > peer_tol(precision):
        return [row("layers", spec.label, SKIP, **fields, err=err, note="spconv output differs: not timed")]
    t = _ms(lambda: conv.forward(x), device, reps)
    map_ms = _ms(conv.build_map, device, reps)
    return [row("layers", spec.label, PASS, **fields, err=err, **{"pass": "fwd"}, ms=t,
                tflops=base["flops"] / (t * 1e9), map_ms=map_ms, conv_per_map=t / map_ms)]


class SpconvMinkUNet(nn.Module):
    """Our MinkUNet's structure and weights, every conv run by spconv (see the module docstring)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.sp = importlib.import_module("spconv.pytorch")
        self.convs = nn.ModuleDict()

    def _conv(self, conv, ts: int):
        key = str(id(conv))
        if key not in self.convs:
            sp, k, s = self.sp, conv.kernel_size, conv.stride
            cin, cout = conv.in_channels, conv.out_channels
            if conv.mode == "submanifold":
                mod = sp.SubMConv3d(cin, cout, k, bias=False, indice_key=f"subm{ts}k{k[0]}")
            elif conv.mode == "conv":
                mod = sp.SparseConv3d(cin, cout, k, s, default_padding(k, conv.dilation), bias=False,
                                      indice_key=f"down{ts}")
            else:
                mod = sp.SparseInverseConv3d(cin, cout, k, bias=False, indice_key=f"down{ts // s[0]}")
            with torch.no_grad():
                from torchsparse_lite.bench.peers import to_spconv_weight  # noqa: PLC0415

                w = conv.weight.detach()
                if mod.conv1x1:  # spconv 2.3.8 runs 1x1 convs as mm(feats, weight.view(Cin, Cout))
                    mod.weight.copy_(w[0].reshape(mod.weight.shape))
                else:
                    mod.weight.copy_(to_spconv_weight(w, k))
            self.convs[key] = mod.to(device=conv.weight.device, dtype=conv.weight.dtype)
        return self.convs[key]

    def _run(self, m: nn.Module, x, ts: int):
        """(spconv tensor, tensor stride) after module ``m`` of our net."""
        name = type(m).__name__
        if name == "Conv3d":
            y = self._conv(m, ts)(x)
            s = m.stride[0]
            return y, ts * s if m.mode == "conv" else (ts // s if m.mode == "transposed" else ts)
        if name == "BatchNorm":
            return x.replace_feature(nn.BatchNorm1d.forward(m, x.features)), ts
        if name == "ReLU":
            return x.replace_feature(torch.relu(x.features)), ts
        if name == "ResidualBlock":
            main, ts_out = self._run(m.main, x, ts)
            side = x if isinstance(m.downsample, nn.Identity) else self._run(m.downsample, x, ts)[0]
            return main.replace_feature(torch.relu(main.features + side.features)), ts_out
        if isinstance(m, nn.Sequential):
            for child in m:
                x, ts = self._run(child, x, ts)
            return x, ts
        raise TypeError(f"SpconvMinkUNet cannot run a {name}")

    def _up(self, block, x, ts: int, skip):
        y, ts = self._run(block.up, x, ts)
        y = y.replace_feature(torch.cat([y.features, skip.features], dim=1))
        return self._run(block.blocks, y, ts)

    def forward(self, feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        n = self.net
        # spconv clips each strided level to floor(shape / 2): 2**5 of margin keeps every voxel of 4 levels
        shape = [int(v) + 32 for v in coords[:, 1:].amax(0)]
        x = self.sp.SparseConvTensor(feats, coords.int(), shape, int(coords[:, 0].max()) + 1)
        x0, t0 = self._run(n.stem, x, 1)
        x1, t1 = self._run(n.stage1, x0, t0)
        x2, t2 = self._run(n.stage2, x1, t1)
        x3, t3 = self._run(n.stage3, x2, t2)
        x4, t4 = self._run(n.stage4, x3, t3)
        y, t = self._up(n.up1, x4, t4, x3)
        y, t = self._up(n.up2, y, t, x2)
        y, t = self._up(n.up3, y, t, x1)
        y, _ = self._up(n.up4, y, t, x0)
        return n.classifier(y.features)


def network_rows(net32, feats, coords, ref, base, precision, device, reps: int) -> list[dict]:
    """spconv running our MinkUNet-18: fwd and fwd+bwd with its maps built in the call, output checked first."""
    if not _usable(device, precision):
        return []
    dtype = PRECISIONS[precision][0]
    fields = {**base, "impl": "spconv", "precision": precision, "grouping": "-"}
    try:
        import copy  # noqa: PLC0415

        model = SpconvMinkUNet(copy.deepcopy(net32).to(dtype))
        f = feats.to(dtype)
        with torch.no_grad():
            err = rel_err(model(f, coords), ref)
    except Exception as exc:  # noqa: BLE001 - the peer's limits are reported, not fatal
        return _peer_error("network", "minkunet18", fields, exc)
    if not err <= peer_tol(precision):
        return [row("network", "minkunet18", SKIP, **fields, err=err, note="spconv output differs: not timed")]

    def fwd():
        with torch.no_grad():
            return model(f, coords)

    def fwdbwd():
        model.zero_grad(set_to_none=True)
        model(f, coords).float().square().mean().backward()

    out = []
    # spconv's CPU build has no backward (it asks torch for the current CUDA stream)
    passes = (("fwd+maps", fwd), ("fwdbwd+maps", fwdbwd)) if device.type == "cuda" else (("fwd+maps", fwd),)
    for p, fn in passes:
        try:
            t = _ms(fn, device, reps)
        except Exception as exc:  # noqa: BLE001 - the peer's limits are reported, not fatal
            out += _peer_error("network", "minkunet18", {**fields, "pass": p}, exc)
            continue
        mult = 3 if p.startswith("fwdbwd") else 1
        out.append(row("network", "minkunet18", PASS, **fields, err=err, **{"pass": p}, ms=t,
                       tflops=base["flops"] * mult / (t * 1e9)))
    return out
