"""A kernel-map cache shared by every layer that sees the same coordinates.

Entries are keyed by the input coordinates, the tensor stride and the conv's
:class:`ConvGeometry`. A lookup first tries the identity of the coordinate
tensor (coordinates flow unchanged through submanifold layers, so the object
is shared) and then its values, so a tensor rebuilt on cloned coordinates
still finds its maps. A transposed conv reuses the map of the down-sampling
conv that produced its (coarse) coordinates, swapped, and returns the finer
coordinates; maps can also be stored and found under an explicit name (as
spconv's ``indice_key``).

In a traced graph (``torch.compile``, ``torch.export``) coordinates are found
by identity only: values cannot be compared while tracing, and every layer
passes its coordinate tensor on unchanged, so a network still builds each
distinct map once per forward. A map built there has no ``id()`` to file it
under (the key holds a negative ordinal instead; the scan finds it), and a
transposed conv or a named map that would need a value comparison raises.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

from .geometry import ConvGeometry
from .kernel_map import KernelMap, build_map


class MapKey(NamedTuple):  # a tuple: Dynamo rebuilds a traced graph's new entries from it
    coords_id: int
    tensor_stride: tuple[int, int, int]
    geometry: ConvGeometry


def same_coords(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two [N, 4] coordinate tensors are the same object or hold the same rows in the same order."""
    return a is b or (a.shape == b.shape and a.device == b.device and bool(torch.equal(a, b)))


def _matches(a: torch.Tensor, b: torch.Tensor) -> bool:
    """:func:`same_coords` in eager; identity in a traced graph (see the module doc)."""
    return a is b if torch.compiler.is_compiling() else same_coords(a, b)


_TRACED = (
    "; in a traced graph (torch.compile / torch.export) coordinates are matched by identity: pass the tensor "
    "the earlier layer returned, not re-created coordinates"
)


def _traced_note() -> str:
    return _TRACED if torch.compiler.is_compiling() else ""


class KernelMapCache:
    """Maps built for one family of coordinate sets (one batch of scans)."""

    def __init__(self) -> None:
        self._maps: dict[MapKey, KernelMap] = {}
        self.named: dict[str, KernelMap] = {}
        self._traced = False  # holds maps a traced graph built (counts as tensors; see _host_counts)

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        self._maps.clear()
        self.named.clear()
        self._traced = False

    def _host_counts(self) -> None:
        """Give the maps a compiled forward stored here their counts as ints, as eager code reads them."""
        hosted: dict[int, KernelMap] = {}
        for table in (self._maps, self.named):
            for k, kmap in table.items():
                if isinstance(kmap.counts, torch.Tensor):
                    if id(kmap) not in hosted:
                        hosted[id(kmap)] = replace(kmap, counts=tuple(kmap.counts.tolist()))
                    table[k] = hosted[id(kmap)]
        self._traced = False

    def get(
        self,
        coords: torch.Tensor,
        tensor_stride: tuple[int, int, int],
        geometry: ConvGeometry,
        builder: str,
        *,
        key: str | None = None,
        generative: bool = False,
    ) -> KernelMap:
        """Return the map of conv ``geometry`` on ``coords``, building it on a miss.

        Args:
            coords: [N, 4] int32 input coordinates.
            tensor_stride: stride of the tensor the coordinates belong to.
            geometry: the conv.
            builder: map builder used on a miss.
            key: optional name: a conv stores its map under it (or checks the
                stored one matches); a transposed conv finds the down-sampling
                map under it.
            generative: a transposed conv that builds its own (growing) map
                instead of reusing a down-sampling conv's.

        Raises:
            ValueError: a non-generative transposed conv finds no matching
                down-sampling map, or ``key`` names the map of another conv.
        """
        traced = torch.compiler.is_compiling()
        if not traced and self._traced:  # (a traced graph reads nothing it need not guard on)
            self._host_counts()
        if geometry.mode == "transposed" and not generative:
            return self._transposed(coords, geometry, key)
        if key is not None and key in self.named:
            return self._check_named(key, coords, geometry)
        kmap = self._find(coords, tensor_stride, geometry)
        if kmap is None:
            kmap = build_map(coords, geometry, builder=builder)
            # a traced tensor has no id(); no real id is negative
            self._maps[MapKey(-1 - len(self._maps) if traced else id(coords), tensor_stride, geometry)] = kmap
            if traced:
                self._traced = True
        if key is not None:
            self.named[key] = kmap
        return kmap

    def _find(
        self, coords: torch.Tensor, tensor_stride: tuple[int, int, int], geometry: ConvGeometry
    ) -> KernelMap | None:
        if torch.compiler.is_compiling():  # identity first: the cheap test, and the only one a graph can make
            for key, kmap in self._maps.items():
                if kmap.in_coords is coords and key.tensor_stride == tensor_stride and key.geometry == geometry:
                    return kmap
            return None
        hit = self._maps.get(MapKey(id(coords), tensor_stride, geometry))
        if hit is not None and hit.in_coords is coords:
            return hit
        for key, kmap in self._maps.items():
            if key.geometry == geometry and key.tensor_stride == tensor_stride and same_coords(kmap.in_coords, coords):
                return kmap
        return None

    def _check_named(self, key: str, coords: torch.Tensor, geometry: ConvGeometry) -> KernelMap:
        kmap = self.named[key]
        if kmap.geometry.mode != geometry.mode or not kmap.geometry.same_taps(geometry):
            raise ValueError(
                f"map key {key!r} holds the map of a {kmap.mode} conv with kernel {kmap.kernel_size}, stride "
                f"{kmap.stride}, dilation {kmap.dilation}, padding {kmap.padding}; this {geometry.mode} conv has "
                f"kernel {geometry.kernel_size}, stride {geometry.stride}, dilation {geometry.dilation}, padding "
                f"{geometry.padding}: give the layers different keys or the same geometry"
            )
        if not _matches(kmap.in_coords, coords):
            raise ValueError(
                f"map key {key!r} holds a map built on {kmap.n_in} input voxels, but this layer's input has "
                f"{coords.shape[0]} different ones; layers that share a key must see the same coordinates"
                + _traced_note()
            )
        return kmap

    def _transposed(self, coords: torch.Tensor, geometry: ConvGeometry, key: str | None) -> KernelMap:
        """The swapped map of the down-sampling conv whose outputs are ``coords``."""
        if key is not None:
            down = self.named.get(key)
            if down is None or down.mode != "conv":
                held = "nothing" if down is None else f"a {down.mode} map"
                raise ValueError(
                    f"transposed conv with key {key!r}: the key holds {held}; it needs the map of the strided "
                    f"conv with the same key earlier in the network (known keys: {sorted(self.named)})"
                )
            candidates = [down]
        else:
            candidates = [m for m in self._maps.values() if m.mode == "conv" and m.geometry.same_taps(geometry)]
        for down in sorted(candidates, key=lambda m: m.out_coords is not coords):
            if _matches(down.out_coords, coords):
                if not down.geometry.same_taps(geometry):
                    raise ValueError(
                        f"transposed conv with key {key!r} has kernel {geometry.kernel_size}, stride "
                        f"{geometry.stride}, dilation {geometry.dilation}, padding {geometry.padding} but the "
                        f"down-sampling conv under that key has {down.kernel_size}, {down.stride}, "
                        f"{down.dilation}, {down.padding}; they must match"
                    )
                return down.transpose()
        where = f"under key {key!r}" if key is not None else "in this tensor's map cache"
        raise ValueError(
            f"transposed conv (kernel {geometry.kernel_size}, stride {geometry.stride}): no down-sampling conv "
            f"with the same kernel, stride, dilation and padding produced these {coords.shape[0]} coordinates "
            f"{where}, so the finer coordinates to return are unknown; apply it to the output of the matching "
            "strided conv (keeping its map cache), or pass generative=True for a generative transposed conv "
            "whose outputs grow by the kernel" + _traced_note()
        )
