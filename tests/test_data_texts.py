"""Texts: the memory-lean (id, text) sequence."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from densescale.data import Texts, read_tsv_texts


def _texts(n: int = 50) -> tuple[list[str], list[str]]:
    ids = [f"d{i}" for i in range(n)]
    texts = [f"passage {i} ünïcode {'x' * (i % 7)}" for i in range(n)]
    return ids, texts


def test_sequence_interface_matches_lists():
    ids, texts = _texts()
    t = Texts.from_pairs(ids, texts)
    assert len(t) == len(texts)
    assert [t[i] for i in range(len(t))] == texts
    assert list(t) == texts
    assert t[-1] == texts[-1]
    assert t[3:9] == texts[3:9]
    assert t[::5] == texts[::5]
    assert t.batch(10, 20) == texts[10:20]
    assert t.batch(7, 7) == []
    assert [t.id(i) for i in range(len(t))] == ids
    assert list(t.ids) == ids and t.ids[2:4] == ids[2:4] and len(t.ids) == len(ids)
    assert t.take([5, 1, 5]) == [texts[5], texts[1], texts[5]]
    for i in (0, 17, 49):
        assert t.index(ids[i]) == i
    assert "d17" in t.ids and "nope" not in t.ids
    np.testing.assert_array_equal(t.indices(["d3", "zz", "d0"], missing=-1), [3, -1, 0])
    with pytest.raises(KeyError, match="zz"):
        t.index("zz")
    with pytest.raises(IndexError):
        t[50]
    with pytest.raises(ValueError, match="start"):
        t.batch(5, 2)


def test_select_copies_rows_in_order():
    ids, texts = _texts(30)
    t = Texts.from_pairs(ids, texts)
    s = t.select([4, 0, 29, 4])
    assert list(s) == [texts[4], texts[0], texts[29], texts[4]]
    assert list(s.ids) == [ids[4], ids[0], ids[29], ids[4]]
    assert len(t.select([])) == 0


def test_duplicate_ids_are_reported():
    t = Texts.from_pairs(["a", "b", "a"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        t.index("b")


def test_empty_and_odd_ids():
    t = Texts.from_pairs(["", "é", "a b"], ["", "t", "u"])
    assert t.index("") == 0 and t.index("é") == 1 and t.index("a b") == 2
    assert t[0] == ""


def test_bad_construction():
    with pytest.raises(TypeError, match="text_buffer"):
        Texts(
            np.zeros(3, np.int32),
            np.zeros(1, np.int64),
            np.zeros(0, np.uint8),
            np.zeros(1, np.int64),
        )
    with pytest.raises(ValueError, match="text_offsets"):
        Texts(
            np.zeros(3, np.uint8),
            np.array([0, 2], np.int64),
            np.zeros(0, np.uint8),
            np.array([0, 0], np.int64),
        )
    with pytest.raises(ValueError, match="same length"):
        Texts.from_pairs(["a"], ["x", "y"])


def test_memory_layout_holds_no_per_item_strings(tmp_path):
    """Loading n lines keeps about the raw bytes plus two int64 offsets per item; a dict or list
    of Python strings would add ~50+ bytes per item per string."""
    n = 60_000
    path = tmp_path / "collection.tsv"
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{i}\tshort passage number {i}\n" for i in range(n))
    raw = path.stat().st_size
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t = read_tsv_texts(path)
    t.index("123")  # the lazy id table: 16 bytes per item
    retained = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(t) == n and t[123] == "short passage number 123" and t.index("59999") == n - 1
    assert t.nbytes <= raw + 8 * 2 * (n + 1) + 16 * n
    assert retained <= t.nbytes + (1 << 20), (retained, t.nbytes)
    for arr in (t.text_buffer, t.text_offsets, t.id_buffer, t.id_offsets):
        assert isinstance(arr, np.ndarray) and arr.dtype != object
