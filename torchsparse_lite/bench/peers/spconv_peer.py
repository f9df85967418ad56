"""spconv 2.x as a benchmark peer: same coordinates, same weights, its own maps and kernels.

Weight layout: ours is ``[K, Cin, Cout]`` with x varying fastest over the
kernel taps; spconv 2.x stores ``[Cout, kx, ky, kz, Cin]`` (indices are
``(batch, x, y, z)`` with ``spatial_shape = (X, Y, Z)``), so

    spconv_weight = ours.reshape(kz, ky, kx, Cin, Cout).permute(4, 2, 1, 0, 3)

(checked on a tiny case by ``tests/test_bench_peers.py``). spconv's CPU
build is only correct single-threaded (its multi-threaded CPU scatter races);
callers check its output against ours at the thread count they time it at.

Three timing entry points, matching ours (map / conv with a cached map / total):

* :meth:`SpconvConv.build_map` builds the index pairs only;
* :meth:`SpconvConv.forward` on :meth:`SpconvConv.prepare`'s tensor runs the
  conv on pairs built once in ``prepare`` (no map building in the call);
* :meth:`SpconvConv.forward_total` on :meth:`SpconvConv.prepare_uncached`'s
  tensor builds the pairs inside the call, as spconv's first layer on new
  coordinates does.

spconv keeps a layer's pairs in the OUTPUT tensor's ``indice_dict`` (the input's
is left as it was), so ``prepare`` hands back a fresh input carrying the first
call's output ``indice_dict``. spconv 2.3.8's module reuses
``indice_dict[indice_key]`` only for submanifold convs and inverse convs; a
strided ``SparseConv3d`` always rebuilds (given cached pairs it asserts "only
support reuse subm indices"), so the cached strided conv calls the kernel the
module runs after pair building, ``spconv.pytorch.functional.indice_conv``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

import torch

from ...kmap.offsets import padding
from ..compare import align_rows
from ..env import _version


def spconv_available() -> bool:
    """True when ``spconv.pytorch`` can be imported."""
    return importlib.util.find_spec("spconv") is not None


def spconv_info() -> dict:
    """Installed spconv distribution and whether its build has CUDA kernels."""
    for dist in ("spconv", "spconv-cu126", "spconv-cu124", "spconv-cu121", "spconv-cu120", "spconv-cu118"):
        ver = _version(dist)
        if ver is not None:
            return {"distribution": dist, "version": ver, "cuda_build": dist != "spconv"}
    return {"distribution": None, "version": None, "cuda_build": False}


def to_spconv_weight(weight: torch.Tensor, kernel_size: tuple[int, int, int]) -> torch.Tensor:
    """[K, Cin, Cout] (x fastest) -> spconv's [Cout, kx, ky, kz, Cin]."""
    if weight.dim() != 3:
        raise ValueError(f"weight must have shape [K, Cin, Cout], got {list(weight.shape)}")
    kx, ky, kz = kernel_size
    if kx * ky * kz != weight.shape[0]:
        raise ValueError(f"weight has {weight.shape[0]} taps but kernel_size {kernel_size} needs {kx * ky * kz}")
    w = weight.reshape(kz, ky, kx, weight.shape[1], weight.shape[2])
    return w.permute(4, 2, 1, 0, 3).contiguous()


KEY = "bench"  # indice_key of the peer's layers


def _spconv():
    return importlib.import_module("spconv.pytorch")


@dataclass
class SpconvConv:
    """One spconv conv layer on fixed coordinates, with our weight converted.

    Args:
        weight: [K, Cin, Cout] in our layout.
        kernel_size, stride: conv geometry (padding ``k // 2`` as ours).
        mode: ``"submanifold"``, ``"conv"`` (strided) or ``"transposed"``.
        coords: [N, 4] int32 (batch, x, y, z) input coordinates. For
            ``"transposed"`` these are the FINE coordinates; the layer runs the
            matching down-sampling first (untimed) and inverts it.
    """

    weight: torch.Tensor
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    mode: str
    coords: torch.Tensor
    _module: torch.nn.Module | None = field(default=None, init=False, repr=False)
    _down: torch.nn.Module | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        sp = _spconv()
        _, cin, cout = self.weight.shape
        pad = padding(self.kernel_size, (1, 1, 1))
        dev = self.weight.device
        if self.mode == "submanifold":
            mod = sp.SubMConv3d(cin, cout, self.kernel_size, bias=False, indice_key=KEY)
        elif self.mode == "conv":
            mod = sp.SparseConv3d(cin, cout, self.kernel_size, self.stride, pad, bias=False, indice_key=KEY)
        elif self.mode == "transposed":
            mod = sp.SparseInverseConv3d(cin, cout, self.kernel_size, bias=False, indice_key=KEY)
            self._down = sp.SparseConv3d(cout, cin, self.kernel_size, self.stride, pad, bias=False,
                                         indice_key=KEY).to(dev)
        else:
            raise ValueError(f"mode must be 'submanifold', 'conv' or 'transposed', got {self.mode!r}")
        with torch.no_grad():
            mod.weight.copy_(to_spconv_weight(self.weight, self.kernel_size))
        self._module = mod.to(dev)
        self.coords = self.coords.to(dev)
        # Room past the last voxel: spconv clips outputs to its output spatial
        # shape floor((X + 2p - k) / s) + 1; ours keeps every output whose
        # window holds an input. A margin of k voxels keeps them all.
        margin = list(self.kernel_size) if self.mode != "submanifold" else [0, 0, 0]
        self.spatial_shape = [int(v) + 1 + m for v, m in zip(self.coords[:, 1:].amax(0), margin)]
        self.batch_size = int(self.coords[:, 0].max()) + 1

    def _input(self, feats: torch.Tensor, indice_dict: dict | None = None):
        sp = _spconv()
        return sp.SparseConvTensor(feats, self.coords, self.spatial_shape, self.batch_size,
                                   indice_dict=indice_dict)

    def _coarse(self, feats: torch.Tensor, feat_coords: torch.Tensor | None):
        """The down-sampling conv's output (its pairs under KEY) carrying ``feats`` in spconv's coarse row order."""
        if feat_coords is None:
            raise ValueError("prepare: feat_coords (coarse coordinates of feats) is needed for 'transposed'")
        x = self._input(torch.zeros(self.coords.shape[0], self.weight.shape[2], dtype=feats.dtype,
                                    device=feats.device))
        with torch.no_grad():
            coarse = self._down(x)
        perm = align_rows(coarse.indices.cpu(), feat_coords.cpu())
        if perm is None:
            raise ValueError("prepare: spconv's coarse coordinates differ from feat_coords")
        return coarse.replace_feature(feats[perm.to(feats.device)])

    def prepare(self, feats: torch.Tensor, feat_coords: torch.Tensor | None = None):
        """spconv input carrying this layer's index pairs, built once here (untimed), for :meth:`forward`.

        Args:
            feats: the layer's input features; for ``"transposed"`` the COARSE
                features [n_coarse, Cin].
            feat_coords: coordinates of ``feats``' rows [n, 4]; needed for
                ``"transposed"``, whose coarse rows spconv orders its own way.

        Returns:
            A ``SparseConvTensor`` whose ``indice_dict[KEY]`` holds the pairs:
            for ``"submanifold"`` and ``"conv"`` those of a first call of the
            layer (taken from that call's output), for ``"transposed"`` those of
            the down-sampling conv it inverts (what spconv's inverse conv reuses).
        """
        if self.mode == "transposed":
            return self._coarse(feats, feat_coords)
        with torch.no_grad():
            first = self._module(self._input(feats))  # pairs land in first.indice_dict, not the input's
        return self._input(feats, {KEY: first.indice_dict[KEY]})

    def prepare_uncached(self, feats: torch.Tensor, feat_coords: torch.Tensor | None = None):
        """spconv input holding no pairs, for :meth:`forward_total` (same arguments as :meth:`prepare`)."""
        if self.mode != "transposed":
            return self._input(feats)
        coarse = self._coarse(feats, feat_coords)
        return _spconv().SparseConvTensor(coarse.features, coarse.indices, coarse.spatial_shape, self.batch_size)

    def coarse_coords(self) -> torch.Tensor:
        """Output coordinates of the down-sampling conv (the transposed layer's input), [M, 4] int32."""
        if self.mode != "transposed":
            raise ValueError("coarse_coords is only defined for mode='transposed'")
        x = self._input(torch.zeros(self.coords.shape[0], self.weight.shape[2], device=self.coords.device))
        with torch.no_grad():
            return self._down(x).indices

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv on the pairs cached in ``x`` (from :meth:`prepare`); no map building.

        Returns (out features, out coords [M, 4] int32). Raises ``ValueError``
        when ``x`` carries no pairs (that call would time map building too).
        """
        data = x.find_indice_pair(KEY)
        if data is None:
            raise ValueError("forward: x carries no cached pairs; build it with prepare() "
                             "(forward_total times the map built in the call)")
        with torch.no_grad():
            if self.mode != "conv":
                y = self._module(x)
                return y.features, y.indices
            fsp = importlib.import_module("spconv.pytorch.functional")
            mod = self._module
            out = fsp.indice_conv(x.features.contiguous(), mod.weight, data.indice_pairs, data.indice_pair_num,
                                  data.out_indices.shape[0], mod.algo, x._timer, None)
        return out, data.out_indices

    def forward_total(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv that builds its pairs in the call, on ``x`` from :meth:`prepare_uncached`.

        For ``"transposed"`` spconv's inverse conv never builds pairs itself (it
        reuses its down-sampling conv's), so the call builds those (as
        :meth:`build_map`) and then runs the inverse conv on them.
        """
        if x.find_indice_pair(KEY) is not None:
            raise ValueError("forward_total: x already carries pairs; build it with prepare_uncached()")
        if self.mode == "transposed":
            x = self._with_down_pairs(x)
        with torch.no_grad():
            y = self._module(x)
        return y.features, y.indices

    def _with_down_pairs(self, x):
        """``x`` (coarse, no pairs) with freshly built down-sampling pairs under KEY."""
        sp = _spconv()
        ops = importlib.import_module("spconv.pytorch.ops")
        core = importlib.import_module("spconv.pytorch.core")
        outids, pairs, pair_num = self.build_map()
        d = self._down  # same geometry as build_map's pairs
        out_shape = ops.get_conv_output_size(self.spatial_shape, d.kernel_size, d.stride, d.padding, d.dilation)
        data = core.IndiceData(outids, self.coords, pairs, pair_num, self.spatial_shape, out_shape, is_subm=False,
                               algo=d.algo, ksize=d.kernel_size, stride=d.stride, dilation=d.dilation,
                               padding=d.padding)
        return sp.SparseConvTensor(x.features, x.indices, x.spatial_shape, x.batch_size, indice_dict={KEY: data})

    def build_map(self) -> object:
        """Build spconv's index pairs from scratch (what its first layer on new coords pays).

        Returns spconv's ``(out_indices, indice_pairs, indice_pair_num)``; for
        ``"transposed"`` the pairs of the down-sampling conv it inverts.
        """
        sp = _spconv()
        ops = importlib.import_module("spconv.pytorch.ops")
        pad = list(padding(self.kernel_size, (1, 1, 1)))
        subm = self.mode == "submanifold"
        stride = [1, 1, 1] if subm else list(self.stride)
        return ops.get_indice_pairs(
            self.coords, self.batch_size, self.spatial_shape, sp.ConvAlgo.Native, list(self.kernel_size),
            stride, pad, [1, 1, 1], [0, 0, 0], subm, False,
        )
