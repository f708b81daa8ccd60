"""What several subcommands share: the optional TOML file and the collection flags."""

from __future__ import annotations

import argparse
from pathlib import Path


def read_toml(path: str | None) -> dict:
    if not path:
        return {}
    from densescale.study.config import tomllib

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: --config {p} does not exist")
    return tomllib.loads(p.read_text())


COLLECTION_HELP = (
    "a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), an MS MARCO folder (collection.tsv, "
    "queries*.tsv, qrels*.tsv), irds:<id> (an ir-datasets dataset), or 'synthetic' (the embedded "
    "default collection)"
)


def collection_from_args(args, splits_dir: Path | None = None):
    """The collection of ``--collection``; with ``splits_dir``, a dev split is carved from train
    there when the collection has none."""
    from densescale import data

    table = data.collection_table(args.collection or "synthetic")
    if table["kind"] == "synthetic":
        table["synthetic"] = {"seed": args.seed}
    col = data.open_collection(table, synthetic_dir=Path(args.synthetic_dir))
    if splits_dir is not None and "dev" not in col.splits and "train" in col.splits:
        col = data.carve_dev_split(col, splits_dir, seed=0)
    return col


def add_collection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", default=None, help=COLLECTION_HELP + " (default synthetic)")
    p.add_argument(
        "--synthetic-dir",
        default="data/synthetic",
        help="where the synthetic collection is written / reused (default data/synthetic)",
    )
    p.add_argument("--seed", type=int, default=0)


# ---------------------------------------------------------------- train
