"""``densescale data ...``: make the synthetic collection, describe a collection.

``add_subcommand(subparsers)`` registers ``data`` on the main parser (``densescale.cli``);
``main(argv)`` runs it standalone (``python -m densescale.data.cli``).

    densescale data synthetic OUT_DIR [--num-passages N] [--num-train-queries N] [--seed S] [--set k=v]
    densescale data synth-msmarco --out DIR [--passages N] [--train-queries N] [--dev-queries N]
    densescale data info PATH        (a BEIR folder: split sizes, grades, the share of dev/test
                                      positives that are training positives; a synthetic one
                                      also shows its oracle CE)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .msmarco_shaped import MsmarcoShape, write_msmarco_shaped
from .overlap import grade_counts, positive_overlap
from .synthetic import SyntheticConfig, read_oracle, synthetic


def _parse_set(items: Sequence[str]) -> dict[str, object]:
    """``k=v`` pairs for ``SyntheticConfig`` fields, converted to the field's type."""
    fields = {f.name: f.type for f in dataclasses.fields(SyntheticConfig)}
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(
                f"--set expects FIELD=VALUE with FIELD in {sorted(fields)}, got {item!r}"
            )
        kind = fields[key]
        try:
            out[key] = int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"--set {key} expects a number, got {value!r}") from None
    return out


def add_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="make or describe collections")
    actions = parser.add_subparsers(dest="data_action", required=True)
    syn = actions.add_parser("synthetic", help="write the seeded synthetic BEIR collection")
    syn.add_argument("out_dir", type=Path)
    defaults = SyntheticConfig()
    syn.add_argument("--num-passages", type=int, default=defaults.num_passages)
    syn.add_argument("--num-train-queries", type=int, default=defaults.num_train_queries)
    syn.add_argument("--num-dev", type=int, default=defaults.num_dev)
    syn.add_argument("--num-test", type=int, default=defaults.num_test)
    syn.add_argument("--seed", type=int, default=defaults.seed)
    syn.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other SyntheticConfig field, e.g. --set vocab_size=5000",
    )
    shaped = actions.add_parser(
        "synth-msmarco",
        help="write an MS MARCO-shaped collection (streamed to disk; see data.msmarco_shaped)",
    )
    ms = MsmarcoShape()
    shaped.add_argument("--out", type=Path, required=True, help="folder to write")
    shaped.add_argument("--passages", type=int, default=ms.passages)
    shaped.add_argument("--train-queries", type=int, default=ms.train_queries)
    shaped.add_argument("--dev-queries", type=int, default=ms.dev_queries)
    shaped.add_argument("--seed", type=int, default=ms.seed)
    info = actions.add_parser(
        "info", help="sizes of a collection's splits (and a synthetic one's oracle)"
    )
    info.add_argument("path", nargs="?", default=None, help="a collection folder (or --collection)")
    info.add_argument(
        "--collection",
        default=None,
        help="a BEIR or MS MARCO folder, 'synthetic' (data/synthetic) or irds:<id>",
    )
    info.add_argument(
        "--relevance-level",
        type=int,
        default=1,
        help="smallest qrels grade that counts as a positive (graded qrels: see 'grades')",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.data_action == "synthetic":
        path = synthetic(
            args.out_dir,
            num_passages=args.num_passages,
            num_train_queries=args.num_train_queries,
            num_dev=args.num_dev,
            num_test=args.num_test,
            seed=args.seed,
            **_parse_set(args.set),
        )
        oracle = read_oracle(path)
        record = {
            "path": str(path),
            "chance": oracle["chance"],
            "oracle_ce": {s: v["oracle_ce"] for s, v in oracle["splits"].items()},
        }
    elif args.data_action == "synth-msmarco":
        path = write_msmarco_shaped(
            args.out,
            passages=args.passages,
            train_queries=args.train_queries,
            dev_queries=args.dev_queries,
            seed=args.seed,
        )
        record = {"path": str(path), **json.loads((path / "shape.json").read_text())}
    else:
        from .resolve import collection_table, open_collection

        spec = args.collection or args.path
        if spec is None:
            raise ValueError("data info needs a collection: a folder, or --collection SPEC")
        c = open_collection(collection_table(spec), synthetic_dir="data/synthetic")
        record = {
            "path": str(c.path),
            "name": c.name,
            "passages": len(c.corpus),
            "queries": len(c.queries),
            "splits": {},
        }
        level = args.relevance_level
        for split in c.splits:
            qrels = c.qrels(split)
            pairs = sum(1 for docs in qrels.values() for r in docs.values() if r >= level)
            row = {"queries": len(qrels), "pairs": pairs, "grades": grade_counts(c, split)}
            if split != "train" and "train" in c.splits:
                row["train_positive_overlap"] = positive_overlap(
                    c, split, relevance_level=level
                ).to_dict()
            record["splits"][split] = row
        record["relevance_level"] = level
        if (c.path / "oracle.json").is_file():
            oracle = read_oracle(c.path)
            record["chance"] = oracle["chance"]
            record["oracle_ce"] = {s: v["oracle_ce"] for s, v in oracle["splits"].items()}
    print(json.dumps(record, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="densescale")
    add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
