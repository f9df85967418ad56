"""Benchmark suite: grouping strategies, map builders, backends, dtypes and peers (spconv), checked then timed.

Run it with ``python -m torchsparse_lite bench --help``. Building blocks:

* :mod:`.timing` — warm-up, repetitions, median and IQR (:func:`measure`);
* :mod:`.memory` — peak memory of a call (CUDA allocator, or peak RSS on CPU);
* :mod:`.compare` — output checks (``ok`` / ``wrong`` / ``error`` / ``skipped``);
* :mod:`.workloads` — real scans, synthetic scans, user folders, batching, tiling;
* :mod:`.layers` — layer sets taken from MinkUNet and the sparse ResNet;
* :mod:`.runner`, :mod:`.networks`, :mod:`.sweeps` — the comparisons;
* :mod:`.report`, :mod:`.plots` — tables, JSON, PNG figures.
"""

from ..utils.timing import Timing, measure, summarize
from .compare import Check, check_close

__all__ = ["Check", "Timing", "check_close", "measure", "summarize"]
