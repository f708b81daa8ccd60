"""The ``densescale`` command: data | train | eval | search | study | report | budget.

Training and evaluation read an optional TOML file (``--config``, the same tables as a study file:
[train], [eval]) and flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _toml(path: str | None) -> dict:
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


def _collection(args, splits_dir: Path | None = None):
    """The collection of ``--collection``; with ``splits_dir``, a dev split is carved from train
    there when the collection has none."""
    from densescale import data

    table = data.collection_table(args.collection)
    if table["kind"] == "synthetic":
        table["synthetic"] = {"seed": args.seed}
    col = data.open_collection(table, synthetic_dir=Path(args.synthetic_dir))
    if splits_dir is not None and "dev" not in col.splits and "train" in col.splits:
        col = data.carve_dev_split(col, splits_dir, seed=0)
    return col


def _add_collection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--collection", default="synthetic", help=COLLECTION_HELP + " (default synthetic)"
    )
    p.add_argument(
        "--synthetic-dir",
        default="data/synthetic",
        help="where the synthetic collection is written / reused (default data/synthetic)",
    )
    p.add_argument("--seed", type=int, default=0)


# ---------------------------------------------------------------- train
def cmd_train(args) -> int:
    import torch

    from densescale import data
    from densescale.models import (
        build_encoder,
        load_checkpoint_tokenizer,
        num_non_embedding_params,
        resolve_model,
        train_tokenizer,
    )
    from densescale.study.runner import _negative_pool_of, fit_lengths
    from densescale.train import TrainConfig, train
    from densescale.train.trainer import atomic_write_text

    spec = resolve_model(args.model)  # an unknown size fails before any data is read
    conf = _toml(args.config).get("train", {})
    for key in (
        "protocol",
        "batch_size",
        "lr",
        "max_steps",
        "num_negatives",
        "device",
        "seed",
        "patience",
        "eval_every",
        "negatives_from",
    ):
        value = getattr(args, key)
        if value is not None:
            conf[key] = value
    for study_only in ("epochs", "min_steps", "lr_reference_width", "pretrained_lr"):
        conf.pop(study_only, None)
    norm_scale = float(conf.pop("norm_scale", 0.0) if args.norm_scale is None else args.norm_scale)
    cfg = TrainConfig.from_dict(conf)
    out = Path(args.out)
    if spec.pretrained:  # an unreachable checkpoint fails here, before anything is written
        tokenizer, tok_dir = load_checkpoint_tokenizer(spec.checkpoint), spec.checkpoint
    col = _collection(args, splits_dir=out / "splits")
    pairs = data.annotation_pairs(col, source=args.source, split="train", seed=0)
    if args.data_size:
        if args.data_size > len(pairs):
            raise SystemExit(
                f"error: --data-size {args.data_size} exceeds the {len(pairs)} training pairs"
            )
        pairs = pairs.subset(data.nested_subsets(len(pairs), [args.data_size], seed=cfg.seed)[0])
    dev = data.annotation_pairs(col, source="human", split="dev", seed=0)
    if not spec.pretrained:
        tok_dir = Path(args.tokenizer) if args.tokenizer else out / "tokenizer"
        limit = min(len(col.corpus), 200_000)
        tokenizer = train_tokenizer(
            (col.corpus[i] for i in range(limit)),
            args.vocab_size,
            tok_dir,
            cache_key=f"{col.path}:{len(col.corpus)}:{limit}",
        )
    torch.manual_seed(cfg.seed)
    model = build_encoder(
        spec.size,
        vocab_size=None if spec.pretrained else tokenizer.vocab_size,
        out_dim=args.out_dim,
        pretrained=spec.checkpoint,
        norm_scale=norm_scale,
    )
    n_params = num_non_embedding_params(model)
    cfg = fit_lengths(cfg, model)
    print(
        f"model {args.model}: N = {n_params:,} non-embedding parameters; "
        f"D = {len(pairs):,} pairs; at most {cfg.max_steps} steps (patience {cfg.patience})"
    )
    result = train(
        model,
        tokenizer,
        pairs,
        col.corpus,
        out,
        cfg,
        dev_pairs=dev,
        negative_pool=_negative_pool_of(col, cfg.negatives_from),
    )
    meta = {
        "model": args.model,
        "checkpoint": spec.checkpoint,
        "N": n_params,
        "encoder": dataclasses.asdict(model.config),
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": str(tok_dir),
        "D": len(pairs),
        "source": args.source,
        "converged": result.converged,
        "config": cfg.to_dict(),
    }
    atomic_write_text(out / "model.json", json.dumps(meta, indent=2))
    state = "converged" if result.converged else f"NOT converged ({result.stop_reason})"
    print(
        f"done: {result.steps} steps, {state}, best dev CE {result.best_dev_ce} at step "
        f"{result.best_step}, checkpoint {out / 'best_model.pt'}"
    )
    return 0


# ---------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    import torch

    from densescale.eval import evaluate
    from densescale.models import (
        DenseEncoder,
        DenseEncoderConfig,
        build_encoder,
        load_checkpoint_tokenizer,
        load_tokenizer,
    )

    conf = _toml(args.config).get("eval", {})
    model_dir = Path(args.model_dir)
    meta_path = model_dir / "model.json"
    if not meta_path.exists():
        raise SystemExit(
            f"error: --model-dir {model_dir} has no model.json (train it with `densescale train`)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("checkpoint"):
        tokenizer = load_checkpoint_tokenizer(meta["checkpoint"])
    else:
        tokenizer = load_tokenizer(Path(meta["tokenizer"]))
    if "encoder" in meta:
        model = DenseEncoder(DenseEncoderConfig.from_dict(meta["encoder"]))
    else:  # written before model.json held the encoder config
        model = build_encoder(meta["model"], vocab_size=meta["vocab_size"])
    model.load_state_dict(
        torch.load(model_dir / "best_model.pt", map_location="cpu", weights_only=True)
    )
    col = _collection(args)
    split = args.split or conf.get("split", "test")
    qrels = col.qrels(split)
    qids = sorted(qrels)
    queries = col.queries
    out = Path(args.out) if args.out else model_dir / f"eval.{split}.json"
    record = evaluate(
        model,
        tokenizer,
        corpus_ids=col.corpus.ids,
        corpus_texts=col.corpus,
        query_ids=qids,
        query_texts=[queries[queries.index(q)] for q in qids],
        qrels=qrels,
        k=args.k or conf.get("k", 100),
        num_negatives=conf.get("num_negatives", 256),
        repeats=conf.get("repeats", 10),
        query_max_length=min(32, model.config.max_position),
        passage_max_length=min(
            meta.get("config", {}).get("passage_max_length", 180), model.config.max_position
        ),
        device=args.device,
        run_path=out.with_suffix(".trec"),
        progress=True,
    )
    record.update(
        {
            "model": meta["model"],
            "checkpoint": meta.get("checkpoint"),
            "D": meta.get("D"),
            "source": meta.get("source"),
            "split": split,
            "converged": meta.get("converged"),
        }
    )
    from densescale.study.runner import NEAR_CHANCE, _chance

    chance = _chance(record["num_negatives"])
    record["chance_ce"] = chance
    record["near_chance"] = record["ce"] >= NEAR_CHANCE * chance
    if record["near_chance"]:
        print(
            f"warning: CE {record['ce']:.3f} is at or above 0.9 x chance ({chance:.3f}): this "
            "model has not learned to rank",
            file=sys.stderr,
        )
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)
    print(json.dumps(record, indent=2))
    return 0


# ---------------------------------------------------------------- search
def cmd_search(args) -> int:
    import numpy as np

    from densescale import FlatIndex, search
    from densescale.data import write_trec_run

    queries = np.load(args.queries, mmap_mode="r")
    target = Path(args.corpus)
    if target.is_dir():
        index = FlatIndex.load(target)
        scores, ids = index.search(np.ascontiguousarray(queries), args.k)
    else:
        scores, ids = search(
            np.ascontiguousarray(queries),
            np.load(target, mmap_mode="r"),
            args.k,
            metric=args.metric,
            backend=args.backend,
        )
    qids = [str(i) for i in range(len(queries))]
    n = int(ids.max()) + 1 if ids.numel() else 0
    write_trec_run(args.out, qids, [str(i) for i in range(n)], scores, ids, tag="densescale")
    print(f"wrote {args.out}: {len(qids)} queries x top-{args.k}")
    return 0


# ---------------------------------------------------------------- study / report / budget
def cmd_study(args) -> int:
    from densescale.study import load_study, run_study
    from densescale.study.runner import estimate_gpu_hours

    if args.file is None and args.preset is None:
        raise SystemExit("error: give a study file or --preset NAME")
    study = load_study(
        args.file, preset=args.preset if args.file is None else None, output=args.out
    )
    col = dict(study.collection)
    for key in ("collection", "queries", "qrels_train", "qrels_dev", "qrels_test"):
        value = getattr(args, f"{key}_file" if key in ("collection", "queries") else key, None)
        if value:
            col[key] = value
    if args.collection:
        from densescale.data.resolve import collection_table

        col = {**{k: v for k, v in col.items() if k == "doc2query_model"}}
        col.update(collection_table(args.collection))
    executor = dict(study.executor)
    if args.workers:
        executor["workers"] = args.workers
    if args.executor:
        executor["kind"] = args.executor
    study = dataclasses.replace(study, collection=col, executor=executor)
    if study.collection["kind"] == "msmarco" and not study.collection.get("path"):
        missing = [
            k for k in ("collection", "queries", "qrels_train", "qrels_dev") if not col.get(k)
        ]
        if missing:
            raise SystemExit(
                "error: the msmarco collection needs "
                + ", ".join(
                    f"--{m.replace('_', '-')}" + ("-file" if m in ("collection", "queries") else "")
                    for m in missing
                )
            )
    hours = estimate_gpu_hours(study)
    if hours >= 1.0:
        print(f"estimated compute: {hours:,.0f} GPU-hours (H100, bf16 at 40% of peak)")
        if not args.yes:
            print("re-run with --yes to start")
            return 2
    result = run_study(study)
    print(f"\nresults: {study.output / 'results.jsonl'}")
    if result["report"] is not None:
        print(f"report:  {result['report']}")
    return 0


def cmd_report(args) -> int:
    from densescale.scaling import fit_study, write_report
    from densescale.study.store import ResultsStore

    results = Path(args.results)
    if not results.is_file():
        raise SystemExit(f"error: {results} does not exist (a study's results.jsonl)")
    records = ResultsStore(results).records()
    if not records:
        raise SystemExit(f"error: {results} holds no results")
    out = Path(args.out) if args.out else results.parent / "report"
    # the study's BM25 reference rows sit beside its results (bm25.<split>.json)
    baselines = {}
    for f in sorted(results.parent.glob("bm25.*.json")):
        row = json.loads(f.read_text())
        baselines[row.get("name", "BM25")] = row
        m = row.get("metrics", {})
        print(
            f"  {row.get('name', 'BM25')} reference: "
            + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
        )
    if not baselines:
        print(f"note: no bm25.<split>.json beside {results}: the report has no BM25 row")
    include = args.include_unconverged
    fits = fit_study(records, n_boot=args.n_boot, seed=0, include_unconverged=include)
    for f in fits.values():
        print(f.describe())
    cells = results.parent / "cells"
    path = write_report(
        records,
        out,
        oracle_ce=args.oracle_ce,
        baselines=baselines or None,
        n_boot=args.n_boot,
        seed=0,
        fits=fits,
        include_unconverged=include,
        study_dir=cells if args.curves and cells.is_dir() else None,
    )
    print(f"report: {path}")
    if (out / "training_curves.png").is_file():
        print(f"training curves: {out / 'training_curves.png'}")
    return 0


def cmd_budget(args) -> int:
    from dataclasses import fields

    from densescale.scaling import CostModel, JointLaw, optimal_allocation, plot_budget

    if args.fits:
        sources = json.loads(Path(args.fits).read_text())["sources"]
        source = args.source or next(iter(sources))
        if source not in sources:
            raise SystemExit(f"error: --source {source!r} not in {sorted(sources)}")
        joint = sources[source].get("joint") or {}
        if "params" not in joint:
            raise SystemExit(
                f"error: the joint law of source {source!r} was not fitted in {args.fits}"
            )
        law = JointLaw(**joint["params"])
    else:
        law = JointLaw(A=3.6e4, B=7.1e3, alpha=0.56, beta=1.31, delta=0.03)  # SPEC 1.4, MS MARCO
    cost = CostModel(
        **{
            f.name: getattr(args, f.name)
            for f in fields(CostModel)
            if getattr(args, f.name, None) is not None
        }
    )
    print(f"law: {law.describe() if hasattr(law, 'describe') else law}")
    for include in (False, True):
        a = optimal_allocation(law, cost, args.budget, include_inference=include)
        print(
            f"{'with' if include else 'without'} inference cost: N={a.N:.3g} D={a.D:.3g} "
            f"predicted CE={a.loss:.4f}  annotation=${a.cost.annotation:,.0f} "
            f"training=${a.cost.training:,.0f} inference=${a.cost.inference:,.0f}"
        )
    if args.plot:
        plot_budget(law, cost, args.budget, args.plot, include_inference=not args.no_inference)
        print(f"plot: {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from densescale.data.cli import add_subcommand as add_data_subcommand
    from densescale.study.config import PRESETS

    parser = argparse.ArgumentParser(prog="densescale", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_subcommand(sub)

    p = sub.add_parser("train", help="train one dual encoder")
    _add_collection_args(p)
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
        "--source", default="human", help="annotation source: human | ict | crop | doc2query"
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
    _add_collection_args(p)
    p.add_argument("--config", help="TOML file with an [eval] table")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("-k", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--out", default=None, help="JSON record path (default MODEL_DIR/eval.SPLIT.json)"
    )
    p.set_defaults(func=cmd_eval)

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
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="fit the laws on a results store and write the report")
    p.add_argument("results", help="results.jsonl of a study")
    p.add_argument("--out", default=None, help="report folder (default: next to the results)")
    p.add_argument(
        "--oracle-ce", type=float, default=None, help="known floor to compare delta with"
    )
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples for the intervals")
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
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
