"""FlatIndex: appends, search against the fp64 reference, save/load (mmap), faiss equality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _search_ref import assert_topk_matches, reference_scores, reference_topk, tolerance

from densescale.index import FlatIndex

faiss = pytest.importorskip("faiss")


def _filled(dtype="float32", metric="ip", sizes=(100, 1, 57, 300), D=32):
    index = FlatIndex(D, metric=metric, dtype=dtype)
    pieces = [torch.randn(n, D) for n in sizes]
    for p in pieces:
        index.add(p)
    return index, torch.cat(pieces)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("backend", ["cpp", "torch", "faiss"])
def test_add_many_then_search(dtype, backend):
    index, c = _filled(dtype)
    assert len(index) == c.shape[0] == 458
    stored = c.to(
        {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    ).float()
    q = torch.randn(5, 32)
    for k in (1, 7, 100, len(index)):
        s, i = index.search(q, k, backend=backend)
        assert_topk_matches(s, i, reference_scores(q, stored), k, tolerance(32, torch.float32))


def test_cosine_index_normalises():
    index, c = _filled(metric="cos")
    q = torch.randn(4, 32) * 3
    s, i = index.search(q, 10)
    assert_topk_matches(s, i, reference_scores(q, c, "cos"), 10, 1e-5)


def test_add_copies_the_callers_data():
    index = FlatIndex(4)
    v = torch.randn(3, 4)
    index.add(v)
    v.fill_(100.0)
    assert float(index.shards[0].abs().max()) < 100.0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_save_load_round_trip_mmap(tmp_path, dtype):
    index, _ = _filled(dtype, sizes=(70000, 10))  # two shards: coalescing stops at 65,536 rows
    assert len(index.shards) == 2
    q = torch.randn(3, 32)
    before = index.search(q, 9)
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["ntotal"] == 70010 and meta["dtype"] == dtype and len(meta["shards"]) == 2
    loaded = FlatIndex.load(tmp_path / "idx")
    assert (loaded.dim, loaded.metric, loaded.dtype, len(loaded)) == (32, "ip", dtype, 70010)
    # Shards are views of the mapped files, not copies in memory.
    arr = np.load(tmp_path / "idx" / meta["shards"][0]["file"], mmap_mode="r")
    assert loaded.shards[0].shape == arr.shape
    for a, b in zip(before, loaded.search(q, 9)):
        assert torch.equal(a, b)
    # A loaded index keeps growing; its mapped shards are left untouched.
    loaded.add(torch.randn(2, 32))
    assert len(loaded) == 70012 and len(loaded.shards) == 3


def test_save_replaces_atomically_and_cleans_up_on_failure(tmp_path, monkeypatch):
    index, _ = _filled(sizes=(20,))
    index.save(tmp_path / "idx")
    bigger, _ = _filled(sizes=(50,))

    def boom(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        bigger.save(tmp_path / "idx")
    monkeypatch.undo()
    assert len(FlatIndex.load(tmp_path / "idx")) == 20  # the old index is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp dirs left behind
    bigger.save(tmp_path / "idx")
    assert len(FlatIndex.load(tmp_path / "idx")) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_load_rejects_bad_directories(tmp_path):
    with pytest.raises(ValueError, match="meta.json"):
        FlatIndex.load(tmp_path)
    index, _ = _filled(sizes=(5,))
    index.save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    meta["shards"][0]["rows"] = 6
    (tmp_path / "idx" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="expected shape"):
        FlatIndex.load(tmp_path / "idx")


def test_faiss_equality_and_conversion():
    index, c = _filled()
    fi = faiss.IndexFlatIP(32)
    fi.add(c.numpy())
    q = torch.randn(8, 32)
    fd, fids = fi.search(q.numpy(), 25)
    s, i = index.search(q, 25)
    torch.testing.assert_close(s, torch.from_numpy(fd), atol=1e-4, rtol=0)
    ref = reference_scores(q, c)
    # Same ids as faiss wherever scores are distinct (random data: everywhere).
    assert torch.equal(i, torch.from_numpy(fids))
    assert_topk_matches(s, i, ref, 25, tolerance(32, torch.float32))
    back = FlatIndex.from_faiss(fi)
    assert len(back) == len(index)
    assert torch.equal(back.search(q, 25)[1], i)
    again = index.to_faiss()
    assert again.ntotal == len(index)
    assert np.array_equal(again.search(q.numpy(), 25)[1], fids)


def test_faiss_ties_match_up_to_order():
    index = FlatIndex(16)
    c = torch.randint(-1, 2, (300, 16)).float()
    index.add(c)
    q = torch.randint(-2, 3, (6, 16)).float()
    _, i = index.search(q, 40)
    rs, ri = reference_topk(reference_scores(q, c), 40)
    assert torch.equal(i, ri)
    fd, _ = index.to_faiss().search(q.numpy(), 40)
    torch.testing.assert_close(torch.from_numpy(fd).double(), rs, atol=0, rtol=0)


def test_from_faiss_rejects_l2():
    with pytest.raises(TypeError, match="IndexFlatIP"):
        FlatIndex.from_faiss(faiss.IndexFlatL2(4))


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: FlatIndex(0), ValueError, "dim must be"),
        # the vectors passed where the dimension goes: named by type, not printed
        (lambda: FlatIndex(torch.randn(3, 4)), ValueError, r"to add\(\)\), got a Tensor$"),
        (lambda: FlatIndex(4, metric="l2"), ValueError, "metric must be one of"),
        (lambda: FlatIndex(4, dtype="int8"), ValueError, "dtype must be one of"),
        (lambda: FlatIndex(4).add(torch.randn(2, 5)), ValueError, "dim 4"),
        (lambda: FlatIndex(4).add(torch.tensor([[1.0, float("nan"), 0, 0]])), ValueError, "NaN"),
        (lambda: FlatIndex(4).add(torch.zeros(0, 4)), ValueError, "must not be empty"),
        (lambda: FlatIndex(4).search(torch.randn(1, 4), 1), ValueError, "index is empty"),
        (lambda: _one().search(torch.randn(1, 5), 1), ValueError, "dim 4"),
        (lambda: _one().search(torch.randn(1, 4), 4), ValueError, "k must be in"),
        (
            lambda: _one().search(torch.tensor([[float("inf"), 0, 0, 0]]), 1),
            ValueError,
            "queries row 0 holds NaN or Inf",
        ),
        (
            lambda: _one().search(torch.randn(1, 4), 1, backend="nope"),
            ValueError,
            "backend must be one of",
        ),
    ],
)
def test_bad_input(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def _one() -> FlatIndex:
    index = FlatIndex(4)
    index.add(torch.randn(3, 4))
    return index
