"""Drop-in compatibility layers: run spconv 2.x, TorchSparse 2.x and MinkowskiEngine model code unmodified.

Each subpackage mirrors one library's public API on top of the native engine
(one :class:`~torchsparse_lite.kmap.geometry.ConvGeometry` per layer, the
shared map cache, :func:`~torchsparse_lite.functional.conv.sparse_conv`):

* ``torchsparse_lite.compat.spconv`` — ``spconv.pytorch``;
* ``torchsparse_lite.compat.torchsparse`` — ``torchsparse``;
* ``torchsparse_lite.compat.minkowski`` — ``MinkowskiEngine``.

Each has an opt-in ``install()`` that registers it in ``sys.modules`` under the
library's own import names, for code bases that import the library deep inside
their own packages. See ``docs/migrating.md``.
"""
