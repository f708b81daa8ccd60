"""``Texts``: a memory-lean, read-only sequence of (id, text) pairs.

All texts live in one UTF-8 ``uint8`` buffer with ``int64`` offsets (text ``i`` is
``buffer[offsets[i]:offsets[i+1]]``), and the ids likewise, so 8.8M MS MARCO passages cost their
bytes plus 16 bytes per item instead of two Python ``str`` objects (~100 bytes of overhead each).
Strings are decoded only when asked for. ``index(id)`` uses a lazily built table of 64-bit
FNV-1a hashes of the ids, sorted, plus the permutation that sorts them (16 bytes per item).
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def fnv1a_hashes(buffer: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a hash of each byte string ``buffer[offsets[i]:offsets[i+1]]``, shape (n,).

    ``h = offset_basis; for byte b: h = (h XOR b) * prime mod 2^64``. Vectorised over items: items
    are processed longest first, so pass ``j`` touches only the items longer than ``j`` and the
    total work is the number of bytes.
    """
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    sorted_lengths = lengths[order]
    starts = offsets[:-1][order]
    hashes = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    max_len = int(sorted_lengths[0]) if n else 0
    with np.errstate(over="ignore"):
        for j in range(max_len):
            # items are sorted by length descending: those longer than j form a prefix
            active = int(np.searchsorted(-sorted_lengths, -j, side="left"))
            h = hashes[:active]
            h ^= buffer[starts[:active] + j].astype(np.uint64)
            h *= _FNV_PRIME
    out = np.empty(n, dtype=np.uint64)
    out[order] = hashes
    return out


def _pack(strings: Iterable[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Encode strings into (uint8 buffer, int64 offsets of length n+1)."""
    buf = bytearray()
    offsets = array("q", [0])
    for s in strings:
        if not isinstance(s, str):
            raise TypeError(f"{what} must be str, got {type(s).__name__}")
        buf += s.encode("utf-8")
        offsets.append(len(buf))
    return np.frombuffer(bytes(buf), dtype=np.uint8), np.frombuffer(offsets, dtype=np.int64).copy()


class _StrSequence(Sequence[str]):
    """A read-only sequence of str: an int index gives one item (``_item``), a slice a list."""

    __slots__ = ()

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._items(*i.indices(len(self)))
        return self._item(i)

    def _item(self, i: int) -> str:
        raise NotImplementedError

    def _items(self, start: int, stop: int, step: int) -> list[str]:
        return [self._item(j) for j in range(start, stop, step)]


class IdsView(_StrSequence):
    """Read-only sequence view of a ``Texts``' ids: ``ids[i] -> str``, ``len``, ``in``, iteration."""

    __slots__ = ("_texts",)

    def __init__(self, texts: Texts) -> None:
        self._texts = texts

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def owner(self) -> Texts:
        """The ``Texts`` these ids belong to (for its hashed ``find`` / ``indices`` lookups)."""
        return self._texts

    def _item(self, i: int) -> str:
        return self._texts.id(i)

    def __iter__(self) -> Iterator[str]:
        return (self._texts.id(j) for j in range(len(self)))

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str) and self._texts.find(item) >= 0

    def index(self, value: str, start: int = 0, stop: int | None = None) -> int:  # type: ignore[override]
        return self._texts.index(value)


def _view(slot: str, doc: str) -> property:
    """A read-only property returning the array kept in ``slot`` (no copy)."""
    return property(operator.attrgetter(slot), doc=doc)


class Texts(_StrSequence):
    """Read-only sequence of texts with string ids, held in two byte buffers.

    ``texts[i] -> str`` (text of row i), ``texts.id(i) -> str``, ``texts.ids`` (a sequence view),
    ``texts.index(id) -> int`` (row of an id; ``KeyError`` when absent), ``texts.indices(ids)``
    (vectorised), ``texts.batch(start, stop) -> list[str]``.

    Layout: ``text_buffer`` (uint8, UTF-8), ``text_offsets`` (int64, n+1, non-decreasing, first 0),
    ``id_buffer`` and ``id_offsets`` the same for ids. Nothing per item is a Python object.
    """

    __slots__ = ("_hash_order", "_hash_sorted", "_ib", "_io", "_tb", "_to", "name")

    def __init__(
        self,
        text_buffer: np.ndarray,
        text_offsets: np.ndarray,
        id_buffer: np.ndarray,
        id_offsets: np.ndarray,
        *,
        name: str = "texts",
    ) -> None:
        for arg, arr, dtype in (
            ("text_buffer", text_buffer, np.uint8),
            ("text_offsets", text_offsets, np.int64),
            ("id_buffer", id_buffer, np.uint8),
            ("id_offsets", id_offsets, np.int64),
        ):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype != dtype:
                got = (
                    f"{arr.dtype}{arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                )
                raise TypeError(f"{arg} must be a 1-d numpy {np.dtype(dtype)} array, got {got}")
        if len(text_offsets) != len(id_offsets) or len(text_offsets) < 1:
            raise ValueError(
                f"text_offsets and id_offsets must both have n+1 >= 1 entries, got "
                f"{len(text_offsets)} and {len(id_offsets)}"
            )
        for arg, off, buf in (
            ("text_offsets", text_offsets, text_buffer),
            ("id_offsets", id_offsets, id_buffer),
        ):
            if off[0] != 0 or off[-1] != len(buf) or (len(off) > 1 and np.any(np.diff(off) < 0)):
                raise ValueError(
                    f"{arg} must start at 0, be non-decreasing and end at the buffer length {len(buf)}"
                )
        self._tb, self._to, self._ib, self._io = text_buffer, text_offsets, id_buffer, id_offsets
        self._hash_sorted: np.ndarray | None = None
        self._hash_order: np.ndarray | None = None
        self.name = name

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, ids: Iterable[str], texts: Iterable[str], *, name: str = "texts") -> Texts:
        """Build from two iterables of ``str`` of equal length (small data and tests)."""
        ib, io = _pack(ids, "ids")
        tb, to = _pack(texts, "texts")
        if len(io) != len(to):
            raise ValueError(
                f"ids and texts must have the same length, got {len(io) - 1} and {len(to) - 1}"
            )
        return cls(tb, to, ib, io, name=name)

    def select(self, rows: Sequence[int] | np.ndarray) -> Texts:
        """A new ``Texts`` holding rows ``rows`` (in that order), copied into fresh buffers."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-d, got shape {rows.shape}")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(
                f"rows must lie in [0, {len(self)}), got values in [{rows.min()}, {rows.max()}]"
            )
        tb, to = _gather(self._tb, self._to, rows)
        ib, io = _gather(self._ib, self._io, rows)
        return Texts(tb, to, ib, io, name=self.name)

    # sequence protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._to) - 1

    def _row(self, i: int) -> int:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"row {i} out of range for {self.name} of {n} items")
        return j

    def _item(self, i: int) -> str:
        j = self._row(i)
        return self._tb[self._to[j] : self._to[j + 1]].tobytes().decode("utf-8")

    def _items(self, start: int, stop: int, step: int) -> list[str]:
        if step == 1:
            return self.batch(start, max(start, stop))
        return super()._items(start, stop, step)

    def __iter__(self) -> Iterator[str]:
        step = 4096
        for s in range(0, len(self), step):
            yield from self.batch(s, min(s + step, len(self)))

    def __repr__(self) -> str:
        return f"Texts(name={self.name!r}, n={len(self)}, text_bytes={len(self._tb)})"

    def id(self, i: int) -> str:
        """Id of row ``i``."""
        j = self._row(i)
        return self._ib[self._io[j] : self._io[j + 1]].tobytes().decode("utf-8")

    @property
    def ids(self) -> IdsView:
        return IdsView(self)

    def batch(self, start: int, stop: int) -> list[str]:
        """Texts of rows ``start .. stop-1`` decoded in one pass over the buffer."""
        n = len(self)
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))):
            raise TypeError(
                f"start and stop must be ints, got {type(start).__name__}, {type(stop).__name__}"
            )
        if not 0 <= start <= stop <= n:
            raise ValueError(f"need 0 <= start <= stop <= {n}, got start={start}, stop={stop}")
        base = int(self._to[start])
        raw = self._tb[base : self._to[stop]].tobytes()
        offs = (self._to[start : stop + 1] - base).tolist()
        return [raw[offs[k] : offs[k + 1]].decode("utf-8") for k in range(stop - start)]

    def take(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """Texts of arbitrary rows, in order."""
        return [self[int(r)] for r in np.asarray(rows, dtype=np.int64).ravel()]

    # persistence ------------------------------------------------------------------------------
    _FILES = ("text_buffer", "text_offsets", "id_buffer", "id_offsets")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the four arrays as ``.npy`` files in folder ``path`` (built in a temp folder and
        renamed into place, replacing an older save). ``Texts.load(path)`` maps them back."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            for name, arr in zip(self._FILES, (self._tb, self._to, self._ib, self._io)):
                np.save(tmp / f"{name}.npy", arr)
            meta = {"format": "densescale.Texts", "version": 1, "name": self.name, "n": len(self)}
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.rename(out, old)
                os.rename(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> Texts:
        """Load a folder written by ``save``; with ``mmap`` the buffers are memory-mapped
        (read-only, paged in on use), so even MS MARCO opens in milliseconds."""
        root = Path(path)
        meta_file = root / "meta.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{root} is not a saved Texts folder (no meta.json)")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != "densescale.Texts":
            raise ValueError(f"{meta_file}: not a densescale.Texts folder")
        arrays = [np.load(root / f"{n}.npy", mmap_mode="r" if mmap else None) for n in cls._FILES]
        texts = cls(*arrays, name=meta.get("name", "texts"))
        if len(texts) != meta.get("n"):
            raise ValueError(f"{root}: holds {len(texts)} items, meta.json says {meta.get('n')}")
        return texts

    # byte-level views (for vectorised consumers) ---------------------------------------------
    text_buffer = _view("_tb", "(total text bytes,) uint8: the UTF-8 texts back to back.")
    text_offsets = _view("_to", "(n + 1,) int64: text j is ``text_buffer[o[j]:o[j + 1]]``.")
    id_buffer = _view("_ib", "(total id bytes,) uint8: the UTF-8 ids back to back.")
    id_offsets = _view("_io", "(n + 1,) int64: id j is ``id_buffer[o[j]:o[j + 1]]``.")

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers and offsets (and the id table once built)."""
        extra = (
            0 if self._hash_sorted is None else self._hash_sorted.nbytes + self._hash_order.nbytes
        )
        return self._tb.nbytes + self._to.nbytes + self._ib.nbytes + self._io.nbytes + extra

    # id lookup --------------------------------------------------------------------------------
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        if self._hash_sorted is None:
            hashes = fnv1a_hashes(self._ib, self._io)
            order = np.argsort(hashes, kind="stable")
            hs = hashes[order]
            same = np.flatnonzero(hs[1:] == hs[:-1])
            for k in same:  # equal hashes: either a true duplicate id or a (rare) collision
                a, b = int(order[k]), int(order[k + 1])
                if self.id(a) == self.id(b):
                    raise ValueError(
                        f"{self.name} has duplicate id {self.id(a)!r} at rows {a} and {b}"
                    )
            self._hash_sorted, self._hash_order = hs, order
        return self._hash_sorted, self._hash_order

    def indices(self, ids: Iterable[str], *, missing: int | None = None) -> np.ndarray:
        """Rows of many ids at once, int64 (m,). Absent ids raise ``KeyError`` unless ``missing``
        gives the value to put there (e.g. -1)."""
        ids = list(ids)
        hs, order = self._table()
        qb, qo = _pack(ids, "ids")
        qh = fnv1a_hashes(qb, qo)
        lo = np.searchsorted(hs, qh, side="left")
        hi = np.searchsorted(hs, qh, side="right")
        out = np.full(len(ids), -1, dtype=np.int64)
        for k, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            for pos in range(a, b):  # almost always exactly one candidate
                row = int(order[pos])
                if self.id(row) == ids[k]:
                    out[k] = row
                    break
            else:
                if missing is None:
                    raise KeyError(f"id {ids[k]!r} not found in {self.name}")
                out[k] = missing
        return out

    def find(self, id: str) -> int:
        """Row of ``id`` or -1 when absent."""
        return int(self.indices([id], missing=-1)[0])

    def index(self, id: str) -> int:  # type: ignore[override]
        """Row of ``id``; ``KeyError`` when absent."""
        if not isinstance(id, str):
            raise TypeError(f"id must be str, got {type(id).__name__}")
        return int(self.indices([id])[0])


def _gather(
    buffer: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the byte ranges of ``rows`` into a new (buffer, offsets) pair, vectorised."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    new_off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_off[1:])
    total = int(new_off[-1])
    # position t of the output reads starts[item(t)] + (t - new_off[item(t)])
    item = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    src = starts[item] + (np.arange(total, dtype=np.int64) - new_off[:-1][item])
    return buffer[src].copy() if total else np.zeros(0, np.uint8), new_off


class TextsBuilder:
    """Append-only builder used by the streaming readers: ``add(id_bytes, text_bytes)`` or
    ``extend(...)`` with pre-encoded arrays, then ``build()``."""

    def __init__(self, name: str = "texts") -> None:
        self.name = name
        self._tparts: list[np.ndarray] = []
        self._iparts: list[np.ndarray] = []
        self._tlens: list[np.ndarray] = []
        self._ilens: list[np.ndarray] = []
        self._tbuf = bytearray()
        self._ibuf = bytearray()
        self._tl = array("q")
        self._il = array("q")

    def add(self, id_: bytes, text: bytes) -> None:
        self._ibuf += id_
        self._tbuf += text
        self._il.append(len(id_))
        self._tl.append(len(text))

    def _flush(self) -> None:
        if self._tl:
            self._tparts.append(np.frombuffer(bytes(self._tbuf), np.uint8))
            self._iparts.append(np.frombuffer(bytes(self._ibuf), np.uint8))
            self._tlens.append(np.frombuffer(self._tl, np.int64).copy())
            self._ilens.append(np.frombuffer(self._il, np.int64).copy())
            self._tbuf, self._ibuf, self._tl, self._il = (
                bytearray(),
                bytearray(),
                array("q"),
                array("q"),
            )

    def extend(
        self,
        id_bytes: np.ndarray,
        id_lengths: np.ndarray,
        text_bytes: np.ndarray,
        text_lengths: np.ndarray,
    ) -> None:
        """Append many items already packed as byte arrays plus per-item lengths."""
        self._flush()
        self._iparts.append(id_bytes)
        self._tparts.append(text_bytes)
        self._ilens.append(np.asarray(id_lengths, np.int64))
        self._tlens.append(np.asarray(text_lengths, np.int64))
        if len(self._tparts) > 64:  # keep the list short; one concat is cheap relative to parsing
            self._compact()

    def _compact(self) -> None:
        self._tparts = [np.concatenate(self._tparts)]
        self._iparts = [np.concatenate(self._iparts)]
        self._tlens = [np.concatenate(self._tlens)]
        self._ilens = [np.concatenate(self._ilens)]

    def build(self) -> Texts:
        self._flush()
        if not self._tparts:
            z = np.zeros(0, np.uint8)
            return Texts(z, np.zeros(1, np.int64), z.copy(), np.zeros(1, np.int64), name=self.name)
        self._compact()
        to = np.zeros(len(self._tlens[0]) + 1, np.int64)
        io = np.zeros(len(self._ilens[0]) + 1, np.int64)
        np.cumsum(self._tlens[0], out=to[1:])
        np.cumsum(self._ilens[0], out=io[1:])
        texts = Texts(self._tparts[0], to, self._iparts[0], io, name=self.name)
        self._tparts, self._iparts, self._tlens, self._ilens = [], [], [], []
        return texts
