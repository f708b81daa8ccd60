"""One way to name a collection, for every subcommand and study file.

``--collection`` takes:

- ``synthetic``: the embedded synthetic collection (written once, then reused);
- a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``);
- an MS MARCO folder (``collection.tsv``, ``queries*.tsv``, ``qrels*.tsv``, splits read from the
  file names, e.g. ``qrels.train.tsv``, ``qrels.dev.small.tsv``);
- ``irds:<id>``: a dataset of the ``ir-datasets`` package (``irds:beir/scifact``,
  ``irds:msmarco-passage``).

A study file writes the same as a ``[collection]`` table: ``kind`` (synthetic | beir | msmarco |
irds) with ``path`` or ``id`` (and, for MS MARCO, optionally the files one by one).
"""

from __future__ import annotations

import os
from pathlib import Path

from .collection import Collection, _split_of, load_beir, load_msmarco

KINDS = ("synthetic", "beir", "msmarco", "irds")


def collection_table(spec: str | os.PathLike) -> dict:
    """The ``[collection]`` table that ``--collection SPEC`` stands for.

    Raises ValueError naming ``--collection`` when SPEC is none of the forms above."""
    text = os.fspath(spec)
    if text == "synthetic":
        return {"kind": "synthetic"}
    if text.startswith("irds:"):
        if not text[5:]:
            raise ValueError("--collection irds:<id> needs a dataset id, e.g. irds:beir/scifact")
        return {"kind": "irds", "id": text[5:]}
    path = Path(text)
    if path.is_file() and path.suffix == ".tsv":
        path = path.parent
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return {"kind": "beir", "path": str(path)}
        if (path / "collection.tsv").is_file():
            return {"kind": "msmarco", "path": str(path)}
        raise ValueError(
            f"--collection {text}: the folder holds neither corpus.jsonl (BEIR) nor "
            "collection.tsv (MS MARCO)"
        )
    raise ValueError(
        f"--collection must be 'synthetic', a BEIR or MS MARCO folder, or irds:<id>; "
        f"{text!r} is none of these (the folder does not exist)"
    )


def _msmarco_files(table: dict) -> tuple[Path, list[Path], dict[str, Path]]:
    root = Path(table["path"]) if table.get("path") else None
    corpus = Path(table["collection"]) if table.get("collection") else None
    if corpus is None:
        if root is None:
            raise ValueError("an msmarco collection needs path (a folder) or collection (a file)")
        corpus = root / "collection.tsv"
    queries = [Path(table["queries"])] if table.get("queries") else []
    if not queries and root is not None:
        queries = sorted(root.glob("queries*.tsv"))
    qrels = {
        s: Path(table[f"qrels_{s}"]) for s in ("train", "dev", "test") if table.get(f"qrels_{s}")
    }
    if not qrels and root is not None:
        for f in sorted(root.glob("qrels*.tsv")) + sorted(root.glob("qrels*.txt")):
            qrels.setdefault(_split_of(f), f)
    if not queries or not qrels:
        raise ValueError(
            f"msmarco collection at {root or corpus}: found no queries*.tsv or qrels*.tsv files"
        )
    return corpus, queries, qrels


def open_collection(
    table: dict, *, synthetic_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Collection:
    """Load the collection a ``[collection]`` table names (see the module docstring).

    ``synthetic_dir`` is where the synthetic collection is written (kind synthetic, unless the
    table gives ``path``); ``cache_dir`` keeps parsed MS MARCO / ir-datasets files for fast reloads.
    """
    kind = table.get("kind")
    if kind not in KINDS:
        raise ValueError(f"collection.kind must be one of {KINDS}, got {kind!r}")
    if kind == "synthetic":
        from .synthetic import synthetic

        folder = Path(table.get("path") or synthetic_dir)
        return load_beir(synthetic(folder, **table.get("synthetic", {})))
    if kind == "beir":
        if not table.get("path"):
            raise ValueError("collection.path is required for kind='beir'")
        return load_beir(table["path"])
    if kind == "irds":
        from .irds import load_irds

        if not table.get("id"):
            raise ValueError("collection.id is required for kind='irds' (e.g. 'beir/scifact')")
        return load_irds(table["id"], cache_dir=cache_dir)
    corpus, queries, qrels = _msmarco_files(table)
    return load_msmarco(corpus, queries, qrels, cache_dir=cache_dir)
