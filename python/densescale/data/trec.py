"""TREC-format files: qrels (TREC 4-column or BEIR 3-column with header) and runs.

qrels, TREC: ``qid iter docid rel`` per line (whitespace separated; ``iter`` ignored).
qrels, BEIR: ``query-id<TAB>corpus-id<TAB>score`` with a header line.
run: ``qid Q0 docid rank score tag`` per line; trec_eval orders by score (descending), not rank.

Both return ``{qid: {docid: value}}`` (the layout pytrec_eval and ``densescale.ranking_metrics``
take). Malformed lines raise ``ValueError("path:line: ...")``. ``write_trec_run`` writes atomically.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

PathLike = str | os.PathLike


def _open_lines(path: PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, whitespace-split fields) of non-blank lines."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist or is not a file")
    no = 0
    with open(p, encoding="utf-8") as f:
        try:
            for no, line in enumerate(f, 1):
                fields = line.split()
                if fields:
                    yield no, fields
        except UnicodeDecodeError as e:
            raise ValueError(f"{p}:{no + 1}: not valid UTF-8 ({e.reason})") from None


def _int(text: str, path: PathLike, no: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        try:  # some tools write relevance as 1.0
            v = float(text)
        except ValueError:
            raise ValueError(f"{path}:{no}: {what} must be an integer, got {text!r}") from None
        if not v.is_integer():
            raise ValueError(f"{path}:{no}: {what} must be an integer, got {text!r}") from None
        return int(v)


def iter_qrels(path: PathLike) -> Iterator[tuple[int, str, str, int]]:
    """Yield ``(line, qid, docid, relevance)`` from a TREC 4-column or BEIR 3-column qrels file.

    The format is fixed by the first non-blank line: 4 fields -> TREC; 3 fields -> BEIR (a first
    line whose last field is not an integer is the header and skipped). Every later line must have
    the same number of fields.
    """
    ncols = None
    for no, fields in _open_lines(path):
        if ncols is None:
            ncols = len(fields)
            if ncols not in (3, 4):
                raise ValueError(
                    f"{path}:{no}: expected 4 fields (TREC: qid iter docid rel) or 3 fields "
                    f"(BEIR: query-id corpus-id score), got {len(fields)}"
                )
            try:
                float(fields[-1])
            except ValueError:
                if ncols == 3:
                    continue  # BEIR header line
                raise ValueError(
                    f"{path}:{no}: relevance must be an integer, got {fields[-1]!r}"
                ) from None
        if len(fields) != ncols:
            raise ValueError(
                f"{path}:{no}: expected {ncols} fields like the first line, got {len(fields)}"
            )
        if ncols == 4:
            qid, docid, rel = fields[0], fields[2], fields[3]
        else:
            qid, docid, rel = fields
        yield no, qid, docid, _int(rel, path, no, "relevance")


def add_judgement(
    qrels: dict[str, dict[str, int]], path: PathLike, no: int, qid: str, docid: str, rel: int
) -> None:
    """Record ``rel`` for ``(qid, docid)`` read at line ``no`` of ``path``; the same pair listed
    again with another relevance raises ValueError (which one is meant is unknowable)."""
    row = qrels.setdefault(qid, {})
    if docid in row and row[docid] != rel:
        raise ValueError(
            f"{path}:{no}: ({qid}, {docid}) listed again with relevance {rel} != {row[docid]}"
        )
    row[docid] = rel


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read qrels into ``{qid: {docid: relevance}}``. A pair listed twice with different
    relevance is an error (which one is meant is unknowable)."""
    qrels: dict[str, dict[str, int]] = {}
    for no, qid, docid, rel in iter_qrels(path):
        add_judgement(qrels, path, no, qid, docid, rel)
    if not qrels:
        raise ValueError(f"{path}: qrels file has no judgements")
    return qrels


def write_qrels(
    path: PathLike, qrels: Mapping[str, Mapping[str, int]], *, format: str = "beir"
) -> Path:
    """Write ``{qid: {docid: rel}}`` as BEIR tsv (with header) or TREC 4-column, atomically."""
    if format not in ("beir", "trec"):
        raise ValueError(f"format must be 'beir' or 'trec', got {format!r}")
    lines = ["query-id\tcorpus-id\tscore\n"] if format == "beir" else []
    for qid, docs in qrels.items():
        for docid, rel in docs.items():
            _check_token("qrels query id", qid)
            _check_token("qrels doc id", docid)
            rel = int(rel)
            lines.append(
                f"{qid}\t{docid}\t{rel}\n" if format == "beir" else f"{qid} 0 {docid} {rel}\n"
            )
    return atomic_write_text(path, "".join(lines))


def read_trec_run(path: PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run (``qid Q0 docid rank score tag``) into ``{qid: {docid: score}}``."""
    run: dict[str, dict[str, float]] = {}
    for no, fields in _open_lines(path):
        if len(fields) != 6:
            raise ValueError(
                f"{path}:{no}: expected 6 fields (qid Q0 docid rank score tag), got {len(fields)}"
            )
        qid, _, docid, rank, score, _ = fields
        _int(rank, path, no, "rank")
        try:
            value = float(score)
        except ValueError:
            raise ValueError(f"{path}:{no}: score must be a number, got {score!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}:{no}: score must be finite, got {score!r}")
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise ValueError(f"{path}:{no}: document {docid!r} appears twice for query {qid!r}")
        docs[docid] = value
    return run


def _to_numpy(name: str, x: object) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}") from None
    return x


def _is_token(value: object) -> bool:
    """A non-empty ``str`` with no whitespace (``str.split``'s, which the readers split on)."""
    return isinstance(value, str) and value.split() == [value]


def _check_token(what: str, value: object) -> None:
    if not _is_token(value):
        raise ValueError(f"{what} must be a non-empty string without whitespace, got {value!r}")


def _docid_lookup(
    docids: Sequence[str], i: np.ndarray, valid: np.ndarray, qids: Sequence[str]
) -> dict[int, str]:
    """``{row: docid}`` for the rows of ``docids`` that ``i`` references, each checked once.

    Raises ``ValueError`` naming ``docids`` for a referenced entry that is not a non-empty string
    without whitespace, and for a query (row of ``i``) that would list one docid twice, whether
    through the same row twice or two rows of ``docids`` holding the same string. Cost: one
    Python step per distinct referenced row; the per-query check is vectorised.
    """
    used = np.unique(i[valid])
    names = [docids[r] for r in used.tolist()]
    for r, name in zip(used.tolist(), names):
        if not _is_token(name):
            raise ValueError(
                f"docids[{r}] must be a non-empty string without whitespace (TREC runs are "
                f"whitespace-separated), got {name!r}"
            )
    # canonical id per referenced row: rows holding the same string share one
    first: dict[str, int] = {}
    canon = np.array([first.setdefault(n, k) for k, n in enumerate(names)], dtype=np.int64)
    if len(first) == len(names):
        canon = None  # distinct strings: only a repeated row index can repeat a docid
    codes = np.full(i.shape, -1, dtype=np.int64)
    pos = np.searchsorted(used, i[valid])
    codes[valid] = pos if canon is None else canon[pos]
    srt = np.sort(codes, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        r, c = (int(x[0]) for x in np.nonzero(dup))
        name = names[int(srt[r, c + 1])]
        rows = sorted({int(x) for x in i[r][valid[r]] if docids[int(x)] == name})
        raise ValueError(
            f"docids: query {qids[r]!r} (row {r}) would list document {name!r} twice (ids {rows} of docids"
            f"{' repeated' if len(rows) == 1 else ''}); a docid may appear once per query"
        )
    return dict(zip(used.tolist(), names))


def write_trec_run(
    path: PathLike,
    qids: Sequence[str],
    docids: Sequence[str],
    scores: object,
    ids: object,
    tag: str = "densescale",
) -> Path:
    """Write search results as a TREC run, atomically (temp file + ``os.replace``).

    qids: M query ids. docids: maps a corpus row to its docid (``Texts.ids`` or any sequence).
    scores: (M, k) float array/tensor; ids: (M, k) integer rows into ``docids``, -1 = no result
    (skipped). Each query's results are written in the given order with ranks 1, 2, ...; scores
    are written with enough digits to round-trip (float32: 9 significant digits).

    Raises ``ValueError`` before anything is written (no file created, an existing one untouched)
    when: a qid or a referenced docid is not a non-empty string without whitespace (what
    ``read_trec_run`` and trec_eval split on), qids repeat, one query would list a docid twice
    (``ids`` repeating a row, or two rows of ``docids`` with the same string), or ids/scores are
    malformed. Only the docids that ``ids`` references are checked, each once.
    """
    s = _to_numpy("scores", scores)
    i = _to_numpy("ids", ids)
    if s.ndim != 2:
        raise ValueError(f"scores must have shape (M, k), got {s.shape}")
    if i.shape != s.shape:
        raise ValueError(f"ids must have the shape of scores {s.shape}, got {i.shape}")
    if not np.issubdtype(i.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {i.dtype}")
    if not np.issubdtype(s.dtype, np.floating):
        raise TypeError(f"scores must be floating point, got dtype {s.dtype}")
    if len(qids) != s.shape[0]:
        raise ValueError(
            f"qids must have one entry per row of scores ({s.shape[0]}), got {len(qids)}"
        )
    _check_token("tag", tag)
    valid = i >= 0
    if valid.any():
        hi = int(i[valid].max())
        if hi >= len(docids):
            raise ValueError(f"ids must be -1 or rows of docids (< {len(docids)}), got {hi}")
    if (i < -1).any():
        raise ValueError(f"ids must be -1 or >= 0, got {int(i.min())}")
    if not np.isfinite(s[valid]).all():
        raise ValueError("scores of returned ids must be finite (found NaN or Inf)")
    seen: set[str] = set()
    for qid in qids:
        _check_token("qids entry", qid)
        if qid in seen:
            raise ValueError(f"qids must be unique, {qid!r} appears twice")
        seen.add(qid)
    lookup = _docid_lookup(docids, i, valid, qids)
    fmt = "{:.17g}" if s.dtype == np.float64 else "{:.9g}"
    # streamed query by query into the temp file: a 7M-line MS MARCO run never sits in memory
    with atomic_writer(path) as f:
        for r, qid in enumerate(qids):
            rank = 0
            lines = []
            for row, score in zip(i[r].tolist(), s[r].tolist()):
                if row < 0:
                    continue
                rank += 1
                lines.append(f"{qid} Q0 {lookup[row]} {rank} {fmt.format(score)} {tag}\n")
            f.writelines(lines)
    return Path(path)


@contextlib.contextmanager
def atomic_writer(path: PathLike, *, binary: bool = False) -> Iterator[TextIO]:
    """Open a temp file beside ``path`` for writing text (bytes with ``binary``); on success it is
    fsynced and renamed onto ``path`` (readers see the old file or the whole new one), on error it
    is removed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a plain open() would not
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + ``os.replace``)."""
    with atomic_writer(path) as f:
        f.write(text)
    return Path(path)
