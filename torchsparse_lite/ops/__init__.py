"""torch.library custom ops: how map building and the conv compute appear in a traced graph.

``torch.compile`` and ``torch.export`` cannot trace the data-dependent Python
of map building (output counts, pair counts per offset, ``.tolist()``) or the
executors' loops over offsets; each of those stages is one registered
custom op here, with a fake (meta) implementation that gives its output
shapes, data-dependent sizes as unbacked symbolic ints:

* :mod:`.maps` — ``output_coords`` and one ``kernel_map_<builder>`` op per map
  builder (``hash``, ``sort``, ``triton_hash``, ``triton_sort``);
  :func:`~.maps.traced_map` is what ``kmap.build_map`` calls in a traced graph;
* :mod:`.conv` — ``conv_torch`` / ``conv_torch_weight_grad`` (the PyTorch
  gather-GEMM-scatter) and ``conv_triton`` / ``conv_triton_weight_grad``
  (the fused kernels), with autograd (``register_autograd``);
* :mod:`.checks` — ``checked``: value checks of other code (``to_bev``, a
  ``compat.spconv`` tensor's indices) run by the op ``checked`` at run time,
  raising the eager errors;
* :mod:`.schema` — how a :class:`~torchsparse_lite.kmap.geometry.ConvGeometry`
  and a grouping travel as op arguments (ints, lists of ints, strings).

This ``__init__`` imports nothing: ``kmap.kernel_map`` imports :mod:`.maps`,
which must not pull in the conv side (that imports ``kmap.kernel_map``).
"""
