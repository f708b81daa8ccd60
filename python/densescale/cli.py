"""The ``densescale`` command: data | train | eval | export | search | study | report | budget.

Training and evaluation read an optional TOML file (``--config``, the same tables as a study file:
[train], [eval]) and flags override it.
"""

from __future__ import annotations

import argparse
import sys

from densescale.commands._common import COLLECTION_HELP, add_collection_args
from densescale.commands.budget import cmd_budget
from densescale.commands.export import cmd_export
from densescale.commands.study import cmd_report, cmd_study
from densescale.commands.train_eval import cmd_eval, cmd_search, cmd_train


def build_parser() -> argparse.ArgumentParser:
    from densescale.data.cli import add_subcommand as add_data_subcommand
    from densescale.study.config import PRESETS

    parser = argparse.ArgumentParser(prog="densescale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_subcommand(sub)

    p = sub.add_parser("train", help="train one dual encoder")
    add_collection_args(p)
    p.add_argument("--config", help="TOML file with a [train] table")
    p.add_argument(
        "--model",
        default="L2-H64",
        help="a ladder size (random init, e.g. L2-H128 or tiny) or a Hugging Face checkpoint: a "
        "local folder or a hub id such as google/bert_uncased_L-2_H-128_A-2 (its own tokenizer)",
    )
    p.add_argument("--out-dim", type=int, default=768, help="embedding dimension (projection)")
    p.add_argument(
        "--norm-scale",
        type=float,
        default=None,
        help="normalise embeddings, score = NORM_SCALE x cosine (default: raw dot products)",
    )
    p.add_argument("--data-size", type=int, default=None, help="number of annotated pairs (D)")
    p.add_argument(
        "--source",
        default="human",
        help="annotation source: human | human-noise<f> | ict | crop | doc2query | llm",
    )
    p.add_argument("--out", required=True, help="run folder (checkpoints; resumes if present)")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (trained on the corpus if absent)"
    )
    p.add_argument("--vocab-size", type=int, default=8000)
    for flag, typ in (
        ("protocol", str),
        ("batch-size", int),
        ("lr", float),
        ("max-steps", int),
        ("num-negatives", int),
        ("device", str),
        ("patience", int),
        ("eval-every", int),
        ("negatives-from", str),
    ):
        p.add_argument(f"--{flag}", type=typ, default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval", help="evaluate a trained model: ranking metrics + contrastive entropy"
    )
    add_collection_args(p)
    p.add_argument("--config", help="TOML file with an [eval] table")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model-dir", help="a trained run (densescale train --out) or a study cell folder"
    )
    which.add_argument(
        "--model",
        help="zero-shot: a sentence-transformers folder (e.g. from densescale export) or hub id",
    )
    p.add_argument("--split", default=None)
    p.add_argument("-k", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--bm25", action="store_true", help="add the BM25 row (a study cell has its study's)"
    )
    p.add_argument(
        "--score-scale",
        type=float,
        default=0.0,
        help="with --model: score s x cosine (e.g. 20, or the study's norm_scale); "
        "default: the dot product of the model's embeddings. With --model-dir the model's own "
        "norm_scale applies; a different value here is an error",
    )
    p.add_argument(
        "--fits", default=None, help="a report's fits.json: place the model on its model-size law"
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON record path (default MODEL_DIR/eval.SPLIT.json, or ./eval.NAME.SPLIT.json)",
    )
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export", help="write a trained run or study cell as a sentence-transformers folder"
    )
    p.add_argument("path", help="a run folder, a study cell folder, or a study folder")
    p.add_argument("--out", required=True, help="the folder to write (one per cell under it)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--key", default=None, help="the study cell of this key (results.jsonl)")
    pick.add_argument(
        "--best-per-size", action="store_true", help="the lowest-CE cell of each model size"
    )
    p.add_argument(
        "--overwrite", "--force", action="store_true", help="replace a non-empty --out folder"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "search", help="exact top-k search over saved embeddings, written as a TREC run"
    )
    p.add_argument("queries", help=".npy file of query embeddings (M, D)")
    p.add_argument("corpus", help=".npy file of corpus embeddings (N, D), or a FlatIndex folder")
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--metric", default="ip", choices=("ip", "cos"))
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", default="run.trec")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("study", help="run a scaling study (resumable) and write its report")
    p.add_argument("file", nargs="?", help="study TOML file")
    p.add_argument("--preset", choices=PRESETS)
    p.add_argument("--out", default=None, help="output folder (overrides the study's)")
    p.add_argument(
        "--collection", default=None, help=COLLECTION_HELP + " (overrides the study's [collection])"
    )
    p.add_argument("--collection-file", default=None, help="MS MARCO collection.tsv")
    p.add_argument("--queries-file", default=None, help="MS MARCO queries TSV")
    for split in ("train", "dev", "test"):
        p.add_argument(f"--qrels-{split}", dest=f"qrels_{split}", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--executor", choices=("local", "submitit"), default=None)
    p.add_argument("--yes", action="store_true", help="start even when the estimate is large")
    p.add_argument(
        "--force",
        action="store_true",
        help="when the output folder holds results of another collection, move them to "
        "OUT/previous/<time>/ and start over (without it the study refuses)",
    )
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="run every step but the optimiser steps at the collection's real size, measure "
        "each (time, peak memory, disk) and project the GPU hours; writes OUT/rehearsal/",
    )
    p.add_argument(
        "--rehearse-growth",
        nargs="+",
        default=None,
        metavar="REHEARSAL_JSON",
        help="fit each step's time and memory exponent over rehearsals at several corpus sizes",
    )
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="fit the laws on a results store and write the report")
    p.add_argument("results", help="results.jsonl of a study")
    p.add_argument("--out", default=None, help="report folder (default: next to the results)")
    p.add_argument(
        "--oracle-ce", type=float, default=None, help="known floor to compare delta with"
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=100,
        help="bootstrap resamples for the law intervals (default 100; the rates read off the cells always use 1,000 redraws)",
    )
    p.add_argument(
        "--no-curves",
        dest="curves",
        action="store_false",
        help="skip the training-curve figure (dev CE and loss of every cell against steps)",
    )
    p.add_argument(
        "--include-unconverged",
        action="store_true",
        help="fit the laws on cells that stopped at the step cap too (left out by default)",
    )
    p.add_argument(
        "--place",
        action="append",
        metavar="EVAL_JSON",
        help="an evaluation record of `densescale eval` (repeatable): mark the model at its "
        "effective N on the loss-vs-N figure, from a usable law only",
    )
    from densescale.scaling import LawChecks

    for name, help_text in (
        ("min_r2", "smallest R^2 of a usable law"),
        ("min_points_over_params", "fewest points per parameter of a usable law"),
        ("max_ci_decades", "widest 95%% interval of a parameter, in decades"),
    ):
        default = getattr(LawChecks(), name)
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=default,
            help=f"law check (SPEC 7): {help_text} (default {default:g})",
        )
    p.set_defaults(func=cmd_report)

    from dataclasses import fields

    from densescale.scaling.budget import CostModel

    p = sub.add_parser("budget", help="best (N, D) for a budget under an explicit cost model")
    p.add_argument("budget", type=float, help="total budget in dollars")
    p.add_argument(
        "--fits",
        default=None,
        help="fits.json of a study report (default: the paper's MS MARCO joint law)",
    )
    p.add_argument("--source", default=None, help="annotation source in fits.json")
    p.add_argument(
        "--price",
        action="append",
        default=None,
        metavar="SOURCE=DOLLARS",
        help="dollars per pair of a source (repeat): the best mix of sources under the budget, "
        "from the usable data-size laws in --fits",
    )
    p.add_argument("--no-inference", action="store_true", help="plot without inference cost")
    p.add_argument("--plot", default=None, help="PNG path for iso-loss / iso-cost curves")
    for f in fields(CostModel):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=float,
            default=None,
            help=f"cost model: {f.name} (default {f.default})",
        )
    p.set_defaults(func=cmd_budget)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for resume hints
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
