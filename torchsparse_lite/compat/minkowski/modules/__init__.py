"""``MinkowskiEngine.modules``: building blocks of ME's example networks."""

from . import resnet_block
from .resnet_block import BasicBlock, Bottleneck

__all__ = ["BasicBlock", "Bottleneck", "resnet_block"]
