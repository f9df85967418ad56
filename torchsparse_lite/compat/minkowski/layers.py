"""ME's feature-wise layers: normalisation, nonlinearities, linear (``MinkowskiNormalization.py``,
``MinkowskiNonlinearity.py``, ``MinkowskiOps.py``).

They apply a torch module to ``input.F`` and keep the input's coordinates.
Child names are ME's, so state_dict keys match: ``bn.*`` for the batch norms,
``module.*`` for the nonlinearities (e.g. PReLU's ``module.weight``),
``linear.*`` for :class:`MinkowskiLinear`; ``MinkowskiInstanceNorm`` has
``weight``/``bias`` of shape ``[1, C]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .conv import check_input
from .tensor import SparseTensor


def _wrap(input: SparseTensor, features: torch.Tensor) -> SparseTensor:
    return SparseTensor(
        features, coordinate_map_key=input.coordinate_map_key, coordinate_manager=input.coordinate_manager
    )


class MinkowskiModuleBase(nn.Module):
    """Base class of ME's modules."""


class MinkowskiNetwork(nn.Module, ABC):
    """ME's abstract network: holds the spatial dimension ``D``."""

    def __init__(self, D: int) -> None:
        super().__init__()
        self.D = D

    @abstractmethod
    def forward(self, x: SparseTensor) -> SparseTensor:
        """The network."""


class MinkowskiBatchNorm(nn.Module):
    """Batch norm of the features over all voxels of the batch (child ``bn``: ``nn.BatchNorm1d``)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(
            num_features, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
        )

    def forward(self, input: SparseTensor) -> SparseTensor:
        input = check_input(self, input, self.bn.num_features)
        return _wrap(input, self.bn(input.F))

    def __repr__(self) -> str:
        bn = self.bn
        return (
            f"{type(self).__name__}({bn.num_features}, eps={bn.eps}, momentum={bn.momentum}, "
            f"affine={bn.affine}, track_running_stats={bn.track_running_stats})"
        )


class MinkowskiSyncBatchNorm(MinkowskiBatchNorm):
    """Synchronised batch norm across processes (child ``bn``: ``nn.SyncBatchNorm``)."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: object = None,
    ) -> None:
        nn.Module.__init__(self)
        self.bn = nn.SyncBatchNorm(
            num_features,
            eps=eps,
            momentum=momentum,
            affine=affine,
            track_running_stats=track_running_stats,
            process_group=process_group,
        )


class MinkowskiInstanceNorm(nn.Module):
    """Per-sample normalisation: ``(x - mean_b) / sqrt(var_b + 1e-8) * weight + bias`` (biased variance).

    ``weight``/``bias`` have shape ``[1, num_features]`` as ME's.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(1, num_features))
        self.bias = nn.Parameter(torch.zeros(1, num_features))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1)
            self.bias.zero_()

    def forward(self, input: SparseTensor) -> SparseTensor:
        input = check_input(self, input, self.num_features)
        batch = input.C[:, 0].long()
        _, rows = torch.unique(batch, return_inverse=True)
        n = int(rows.max()) + 1 if len(input) else 0
        count = torch.bincount(rows, minlength=n).to(input.F.dtype)[:, None]
        mean = input.F.new_zeros(n, input.F.shape[1]).index_add(0, rows, input.F) / count
        centred = input.F - mean[rows]
        var = input.F.new_zeros(n, input.F.shape[1]).index_add(0, rows, centred**2) / count
        out = centred / (var + 1e-8).sqrt()[rows]
        return _wrap(input, out * self.weight + self.bias)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(nchannels={self.num_features})"


class MinkowskiLinear(nn.Module):
    """``nn.Linear`` on the features (child ``linear``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, input: SparseTensor) -> SparseTensor:
        input = check_input(self, input, self.linear.in_features)
        return _wrap(input, self.linear(input.F))

    def __repr__(self) -> str:
        lin = self.linear
        return (
            f"{type(self).__name__}(in_features={lin.in_features}, out_features={lin.out_features}, "
            f"bias={lin.bias is not None})"
        )


class MinkowskiNonlinearityBase(nn.Module):
    """Applies ``MODULE(*args, **kwargs)`` (child ``module``) to the features."""

    MODULE: type[nn.Module] | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()
        self.module = self.MODULE(*args, **kwargs)  # type: ignore[misc]

    def forward(self, input: SparseTensor) -> SparseTensor:
        input = check_input(self, input)
        return _wrap(input, self.module(input.F))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _pointwise(name: str, module: type[nn.Module]) -> type[MinkowskiNonlinearityBase]:
    """A :class:`MinkowskiNonlinearityBase` subclass applying ``module``."""
    doc = f"``torch.nn.{module.__name__}`` on the features of a SparseTensor (same arguments)."
    return type(name, (MinkowskiNonlinearityBase,), {"MODULE": module, "__doc__": doc, "__module__": __name__})


MinkowskiELU = _pointwise("MinkowskiELU", nn.ELU)
MinkowskiHardshrink = _pointwise("MinkowskiHardshrink", nn.Hardshrink)
MinkowskiHardsigmoid = _pointwise("MinkowskiHardsigmoid", nn.Hardsigmoid)
MinkowskiHardtanh = _pointwise("MinkowskiHardtanh", nn.Hardtanh)
MinkowskiHardswish = _pointwise("MinkowskiHardswish", nn.Hardswish)
MinkowskiLeakyReLU = _pointwise("MinkowskiLeakyReLU", nn.LeakyReLU)
MinkowskiLogSigmoid = _pointwise("MinkowskiLogSigmoid", nn.LogSigmoid)
MinkowskiPReLU = _pointwise("MinkowskiPReLU", nn.PReLU)
MinkowskiReLU = _pointwise("MinkowskiReLU", nn.ReLU)
MinkowskiReLU6 = _pointwise("MinkowskiReLU6", nn.ReLU6)
MinkowskiRReLU = _pointwise("MinkowskiRReLU", nn.RReLU)
MinkowskiSELU = _pointwise("MinkowskiSELU", nn.SELU)
MinkowskiCELU = _pointwise("MinkowskiCELU", nn.CELU)
MinkowskiGELU = _pointwise("MinkowskiGELU", nn.GELU)
MinkowskiSigmoid = _pointwise("MinkowskiSigmoid", nn.Sigmoid)
MinkowskiSiLU = _pointwise("MinkowskiSiLU", nn.SiLU)
MinkowskiSoftplus = _pointwise("MinkowskiSoftplus", nn.Softplus)
MinkowskiSoftshrink = _pointwise("MinkowskiSoftshrink", nn.Softshrink)
MinkowskiSoftsign = _pointwise("MinkowskiSoftsign", nn.Softsign)
MinkowskiTanh = _pointwise("MinkowskiTanh", nn.Tanh)
MinkowskiTanhshrink = _pointwise("MinkowskiTanhshrink", nn.Tanhshrink)
MinkowskiThreshold = _pointwise("MinkowskiThreshold", nn.Threshold)
MinkowskiSoftmin = _pointwise("MinkowskiSoftmin", nn.Softmin)
MinkowskiSoftmax = _pointwise("MinkowskiSoftmax", nn.Softmax)
MinkowskiLogSoftmax = _pointwise("MinkowskiLogSoftmax", nn.LogSoftmax)
MinkowskiDropout = _pointwise("MinkowskiDropout", nn.Dropout)
MinkowskiAlphaDropout = _pointwise("MinkowskiAlphaDropout", nn.AlphaDropout)

NONLINEARITIES = [
    name
    for name, obj in dict(globals()).items()
    if isinstance(obj, type) and issubclass(obj, MinkowskiNonlinearityBase) and obj.MODULE
]
