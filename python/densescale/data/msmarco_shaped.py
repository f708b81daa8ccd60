"""An MS MARCO-shaped collection without the download, written straight to disk.

The files are those of the MS MARCO passage task, so :func:`densescale.data.load_msmarco` (and
``--collection FOLDER``) read them as they read the real one:

- ``collection.tsv``: ``pid<TAB>passage``, pids ``0..passages-1``;
- ``queries.train.tsv`` / ``queries.dev.small.tsv``: ``qid<TAB>query``;
- ``qrels.train.tsv`` / ``qrels.dev.small.tsv``: TREC 4-column ``qid 0 pid 1``;
- ``shape.json``: the :class:`MsmarcoShape` it was made with (a folder with the same shape is
  reused, not rewritten).

Defaults follow MS MARCO passage v1 (Bajaj et al. 2016; the paper's SPEC 1.3): 8,841,823
passages, 502,939 training queries with one positive each (the paper's largest data size), 6,980
dev queries (``dev.small``), passages of about 56-60 words.

Generative model (enough for BM25 and a dense encoder to have something to find; it is not the
latent model of :mod:`densescale.data.synthetic` and has no oracle). Words are pseudo-words of
:func:`densescale.data.synthetic.make_vocabulary`. Passage p has ``n_p ~ round(N(mean_words,
sd_words))`` words (clipped to [8, 250]) and one topic ``t_p``, uniform over ``topics``; each word
is, with probability ``topic_share``, uniform over the ``topic_words`` words of ``t_p`` (ranks
``stop_words + t_p * topic_words + [0, topic_words)`` modulo the vocabulary), else drawn from the
Zipf background ``P(rank r) ∝ (r + 1)^-zipf``. A query of passage p has ``U{3..8}`` words, each
with probability ``copy_share`` a uniformly chosen word of p, else a background word. Training
positives are drawn uniformly with replacement (several queries may share one, as in MS MARCO);
dev positives are distinct passages.

Memory: one chunk of ``chunk`` passages is generated, rendered to bytes with numpy and appended
at a time (about 100 MB per 100k passages), so 8.8M passages (~3.5 GB of text) need no more than
a small corpus does. Files are written under temporary names and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .readers import _span_indices
from .synthetic import make_vocabulary
from .trec import atomic_write_text

MSMARCO_PASSAGES = 8_841_823
FILES = (
    "collection.tsv",
    "queries.train.tsv",
    "queries.dev.small.tsv",
    "qrels.train.tsv",
    "qrels.dev.small.tsv",
)


@dataclass(frozen=True)
class MsmarcoShape:
    """Sizes and parameters of an MS MARCO-shaped collection (see the module docstring)."""

    passages: int = MSMARCO_PASSAGES
    train_queries: int = 502_939
    dev_queries: int = 6_980
    mean_words: float = 58.0
    sd_words: float = 18.0
    vocab_size: int = 60_000
    stop_words: int = 150
    zipf: float = 1.0
    topics: int = 4_000
    topic_words: int = 40
    topic_share: float = 0.35
    copy_share: float = 0.7
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first field out of range."""
        for name in ("passages", "train_queries", "dev_queries", "vocab_size", "topics"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.dev_queries > self.passages:
            raise ValueError(
                f"dev_queries ({self.dev_queries}) must be <= passages ({self.passages}): each "
                "dev query has its own positive passage"
            )
        if not 8 <= self.mean_words <= 250:
            raise ValueError(f"mean_words must lie in [8, 250], got {self.mean_words!r}")
        for name in ("topic_share", "copy_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.stop_words + self.topic_words >= self.vocab_size:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) must exceed stop_words + topic_words "
                f"({self.stop_words + self.topic_words})"
            )


class _Vocab:
    """The pseudo-words as one byte buffer, and the Zipf background as a CDF over ranks."""

    def __init__(self, shape: MsmarcoShape, rng: np.random.Generator) -> None:
        words = [w.encode() for w in make_vocabulary(shape.vocab_size, rng)]
        self.lengths = np.array([len(w) for w in words], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.lengths)[:-1])).astype(np.int64)
        self.buffer = np.frombuffer(b"".join(words), dtype=np.uint8)
        weights = (np.arange(shape.vocab_size) + 1.0) ** -shape.zipf
        self.cdf = np.cumsum(weights / weights.sum())

    def background(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, rng.random(n)), len(self.cdf) - 1)


def _render(vocab: _Vocab, ids: np.ndarray, words: np.ndarray, counts: np.ndarray) -> bytes:
    """``id<TAB>w w w\\n`` lines as bytes: ``ids`` (M,) integer ids, ``words`` the concatenated
    word ranks of the M lines, ``counts`` (M,) words per line (each >= 1)."""
    id_text = ("\n".join(map(str, ids.tolist())) + "\n").encode()
    id_buf = np.frombuffer(id_text, dtype=np.uint8)
    id_end = np.flatnonzero(id_buf == 10)
    id_start = np.concatenate(([0], id_end[:-1] + 1))
    # one token per id and per word; each is followed by one separator byte
    per_line = counts + 1
    first = np.concatenate(([0], np.cumsum(per_line)[:-1]))
    n_tok = int(per_line.sum())
    is_id = np.zeros(n_tok, dtype=bool)
    is_id[first] = True
    src = np.empty(n_tok, dtype=np.int64)
    length = np.empty(n_tok, dtype=np.int64)
    base = len(vocab.buffer)  # ids are read from after the vocabulary in the joined source
    src[first] = id_start + base
    length[first] = id_end - id_start
    src[~is_id] = vocab.offsets[words]
    length[~is_id] = vocab.lengths[words]
    sep = np.full(n_tok, ord(" "), dtype=np.uint8)
    sep[first] = ord("\t")
    sep[first[1:] - 1] = ord("\n")
    sep[-1] = ord("\n")
    out_start = np.concatenate(([0], np.cumsum(length + 1)[:-1]))
    out = np.empty(int(length.sum()) + n_tok, dtype=np.uint8)
    joined = np.concatenate((vocab.buffer, id_buf))
    out[_span_indices(out_start, out_start + length)] = joined[_span_indices(src, src + length)]
    out[out_start + length] = sep
    return out.tobytes()


def _passage_words(shape: MsmarcoShape, vocab: _Vocab, rng, n: int):
    """Word ranks of ``n`` passages, concatenated, and the words per passage."""
    counts = np.clip(np.rint(rng.normal(shape.mean_words, shape.sd_words, n)), 8, 250)
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    words = vocab.background(rng, total)
    topic = np.repeat(rng.integers(0, shape.topics, n), counts)
    on_topic = rng.random(total) < shape.topic_share
    k = int(on_topic.sum())
    span = shape.vocab_size - shape.stop_words
    words[on_topic] = (
        shape.stop_words
        + (topic[on_topic] * shape.topic_words + rng.integers(0, shape.topic_words, k)) % span
    )
    return words, counts


def _query_words(shape, vocab, rng, words, counts, local_rows):
    """Word ranks of one query per entry of ``local_rows`` (rows of this chunk's passages)."""
    q_counts = rng.integers(3, 9, len(local_rows))
    owner = np.repeat(local_rows, q_counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    picked = words[starts[owner] + (rng.random(len(owner)) * counts[owner]).astype(np.int64)]
    noise = rng.random(len(owner)) >= shape.copy_share
    picked[noise] = vocab.background(rng, int(noise.sum()))
    return picked, q_counts


def _matches(folder: Path, shape: MsmarcoShape) -> bool:
    f = folder / "shape.json"
    if not f.is_file() or not all((folder / name).is_file() for name in FILES):
        return False
    return json.loads(f.read_text()).get("shape") == dataclasses.asdict(shape)


def write_msmarco_shaped(
    out_dir: str | os.PathLike,
    shape: MsmarcoShape | None = None,
    *,
    chunk: int = 100_000,
    progress: bool = True,
    **overrides,
) -> Path:
    """Write an MS MARCO-shaped collection to ``out_dir`` (files and model in the module
    docstring) and return the folder. ``overrides`` replace fields of ``shape`` (e.g.
    ``passages=1_000_000``). A folder already holding this shape is returned as it is.

    Peak memory is one chunk of ``chunk`` passages (plus 16 bytes per query for the positive
    assignment), never the corpus. Raises ValueError naming the field when the shape is out of
    range, before anything is written."""
    from tqdm.auto import tqdm

    shape = dataclasses.replace(shape or MsmarcoShape(), **overrides)
    shape.check()
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    folder = Path(out_dir)
    if _matches(folder, shape):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(shape.seed)
    vocab = _Vocab(shape, rng)
    n, n_train, n_dev = shape.passages, shape.train_queries, shape.dev_queries
    # query q's positive; train qids 0..n_train-1, dev qids follow
    positive = np.concatenate(
        (rng.integers(0, n, n_train), rng.choice(n, n_dev, replace=False))
    ).astype(np.int64)
    order = np.argsort(positive, kind="stable")
    sorted_rows = positive[order]
    tmp = {name: folder / f".{name}.partial" for name in FILES}
    handles = {name: open(p, "wb") for name, p in tmp.items()}  # noqa: SIM115
    try:
        bar = tqdm(total=n, desc="passages", unit="psg", unit_scale=True, disable=not progress)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            words, counts = _passage_words(shape, vocab, rng, b - a)
            handles["collection.tsv"].write(_render(vocab, np.arange(a, b), words, counts))
            lo, hi = np.searchsorted(sorted_rows, [a, b])
            qids = order[lo:hi]
            if len(qids):
                qw, qc = _query_words(shape, vocab, rng, words, counts, sorted_rows[lo:hi] - a)
                for split, sel in (("train", qids < n_train), ("dev.small", qids >= n_train)):
                    if not sel.any():
                        continue
                    w = qw[np.repeat(sel, qc)]
                    handles[f"queries.{split}.tsv"].write(_render(vocab, qids[sel], w, qc[sel]))
                    lines = "".join(
                        f"{q}\t0\t{p}\t1\n"
                        for q, p in zip(qids[sel].tolist(), positive[qids[sel]].tolist())
                    )
                    handles[f"qrels.{split}.tsv"].write(lines.encode())
            bar.update(b - a)
        bar.close()
        for h in handles.values():
            h.flush()
            os.fsync(h.fileno())
            h.close()
        for name, p in tmp.items():
            os.replace(p, folder / name)
    finally:
        for name, h in handles.items():
            h.close()
            if tmp[name].exists():
                tmp[name].unlink()
    record = {"format": "msmarco-passage", "shape": dataclasses.asdict(shape)}
    atomic_write_text(folder / "shape.json", json.dumps(record, indent=2) + "\n")
    return folder
