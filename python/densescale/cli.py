"""The ``densescale`` command: data | train | eval | export | search | study | report | budget.

Training and evaluation read an optional TOML file (``--config``, the same tables as a study file:
[train], [eval]) and flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
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
    from densescale.study.cell import fit_lengths
    from densescale.study.prepare import negative_pool_of
    from densescale.train import TrainConfig, train
    from densescale.train.trainer import atomic_write_text, describe_convergence

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
        negative_pool=negative_pool_of(col, cfg.negatives_from),
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
        "collection": args.collection,
        "converged": result.converged,
        "convergence": result.convergence,
        "config": cfg.to_dict(),
    }
    atomic_write_text(out / "model.json", json.dumps(meta, indent=2))
    state = "converged" if result.converged else f"NOT converged ({describe_convergence(result)})"
    print(
        f"done: {result.steps} steps, {state}, best dev CE {result.best_dev_ce} at step "
        f"{result.best_step}, checkpoint {out / 'best_model.pt'}"
    )
    return 0


# ---------------------------------------------------------------- eval
def _prefixed(texts, prefix: str):
    """``texts`` with ``prefix`` prepended to each, lazily (a corpus may be millions long)."""
    if not prefix:
        return texts

    class _Prefixed:
        def __len__(self) -> int:
            return len(texts)

        def __getitem__(self, i):
            if isinstance(i, slice):
                return [prefix + t for t in texts[i]]
            return prefix + texts[i]

    return _Prefixed()


def _eval_model(args):
    """The model ``eval`` runs, with what its record says about it: a trained run or study cell
    (``--model-dir``), or any sentence-transformers folder or hub id (``--model``, zero-shot).
    Everything fails here, before the collection is read."""
    from densescale.models.export import load_trained
    from densescale.models.st_encoder import (
        is_sentence_transformers_folder,
        load_sentence_transformer,
    )

    name = args.model
    if args.model_dir and is_sentence_transformers_folder(args.model_dir):
        name = args.model_dir  # an exported folder: evaluate it as any sentence-transformers model
    if name:
        try:
            enc = load_sentence_transformer(name, device=args.device, score_scale=args.score_scale)
        except ValueError as e:
            raise SystemExit(f"error: --model: {e}") from None
        slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(str(name)).name)
        about = {
            "model": str(name),
            "checkpoint": str(name),
            "zero_shot": True,
            "N": enc.non_embedding_params(),
            "similarity": enc.similarity,
            "score_scale": args.score_scale,
            "D": 0,
            "source": None,
            "converged": None,
        }
        return enc, enc.tokenizer, about, None, Path(f"eval.{slug or 'model'}")
    try:
        tm = load_trained(args.model_dir)
    except ValueError as e:
        raise SystemExit(f"error: --model-dir: {e}") from None
    about = {
        "model": tm.name,
        "checkpoint": tm.checkpoint,
        "D": tm.info.get("D"),
        "source": tm.info.get("source"),
        "converged": tm.info.get("converged"),
    }
    return tm.model, tm.tokenizer, about, tm, Path(tm.path) / "eval"


def cmd_eval(args) -> int:
    from densescale.eval import above_chance, evaluate

    conf = _toml(args.config).get("eval", {})
    if args.fits and not Path(args.fits).is_file():
        raise SystemExit(f"error: --fits {args.fits} does not exist")
    model, tokenizer, about, trained, stem = _eval_model(args)
    zero_shot = about.get("zero_shot", False)
    prompts = getattr(model, "prompts", {"query": "", "document": ""})
    if zero_shot:
        scored = (
            f"{args.score_scale:g} x cosine"
            if args.score_scale
            else "dot product of its embeddings"
        )
        print(
            f"model {about['model']}: N = {about['N']:,} non-embedding parameters, zero-shot, "
            f"scored by {scored} (its own similarity: {about['similarity']})",
            file=sys.stderr,
        )
        if not args.score_scale and (model.normalises or about["similarity"] == "cosine"):
            print(
                "note: this model scores by cosine; scores in [-1, 1] put CE near chance by "
                "construction, whatever the ranking. Pass --score-scale 20 (the temperature "
                "sentence-transformers models are trained with) or the study's norm_scale "
                "to compare CE with trained cells",
                file=sys.stderr,
            )
    col = _collection(args)
    split = args.split or conf.get("split", "test")
    qrels = col.qrels(split)
    qids = sorted(qrels)
    queries = col.queries
    max_pos = model.config.max_position
    if trained is not None:
        q_len = min(trained.query_max_length, 32, max_pos)
        p_len = min(conf.get("passage_max_length", trained.passage_max_length), max_pos)
    else:
        q_len = min(32, max_pos)
        p_len = min(conf.get("passage_max_length", 180), max_pos)
    out = Path(args.out) if args.out else Path(f"{stem}.{split}.json")
    record = evaluate(
        model,
        tokenizer,
        corpus_ids=col.corpus.ids,
        corpus_texts=_prefixed(col.corpus, prompts.get("document", "")),
        query_ids=qids,
        query_texts=[prompts.get("query", "") + queries[queries.index(q)] for q in qids],
        qrels=qrels,
        k=args.k or conf.get("k", 100),
        num_negatives=conf.get("num_negatives", 256),
        repeats=conf.get("repeats", 10),
        query_max_length=q_len,
        passage_max_length=p_len,
        device=args.device,
        run_path=out.with_suffix(".trec"),
        progress=True,
    )
    if record.get("N") is None and about.get("N") is not None:
        record["N"] = about["N"]
    record.update({k: v for k, v in about.items() if k != "N"})
    record["split"] = split
    record["query_max_length"], record["passage_max_length"] = q_len, p_len
    from densescale.study.prepare import NEAR_CHANCE, chance_ce

    chance = chance_ce(record["num_negatives"])
    record["chance_ce"] = chance
    record["near_chance"] = record["ce"] >= NEAR_CHANCE * chance
    if record.get("metrics_stderr") and record.get("metrics_chance"):
        record["metrics_above_chance"] = above_chance(
            record["metrics"], record["metrics_stderr"], record["metrics_chance"]
        )
    if record["near_chance"]:
        print(
            f"warning: CE {record['ce']:.3f} is at or above 0.9 x chance ({chance:.3f}): this "
            "model has not learned to rank",
            file=sys.stderr,
        )
    bm25 = trained.bm25 if trained is not None else None
    if bm25 is None and args.bm25:
        from densescale.eval import bm25_baseline

        bm25 = bm25_baseline(col, split, k=record["k"])
    if bm25 is not None:
        record["bm25"] = bm25.get("metrics")
    if args.fits:
        from densescale.eval.placement import place_on_law

        placed = place_on_law(args.fits, record["ce"], record.get("ce_stderr"))
        record["placement"] = dataclasses.asdict(placed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)
    print(json.dumps(record, indent=2))
    print(_eval_summary(record, out), file=sys.stderr)
    return 0


def _eval_summary(record: dict, out: Path) -> str:
    """The few lines a person reads: CE against chance, metrics against a random ranking and
    BM25, the placement on the law."""
    n = record.get("N")
    lines = [
        f"{record.get('model')} on {record['split']} ({record['num_queries']:,} queries, "
        f"{record['num_passages']:,} passages)"
        + (f", N = {n:,}" if n else "")
        + (" zero-shot" if record.get("zero_shot") else ""),
        (
            f"  CE = {record['ce']:.4f} +/- {record.get('ce_stderr') or 0:.4f} "
            f"(chance ln(K+1) = {record['chance_ce']:.3f}, K = {record['num_negatives']})"
        ),
    ]
    chance = record.get("metrics_chance") or {}
    bm25 = record.get("bm25") or {}
    for name in ("mrr@10", "ndcg@10", "recall@100"):
        if name in record["metrics"]:
            text = f"  {name} = {record['metrics'][name]:.3f} (random ranking"
            text += f" {chance[name]:.3f}" if name in chance else " n/a"
            text += f", BM25 {bm25[name]:.3f})" if name in bm25 else ")"
            lines.append(text)
    if "placement" in record:
        from densescale.eval.placement import Placement

        p = dict(record["placement"])
        lines.append("  " + Placement(**p).describe())
    lines.append(f"record: {out}")
    return "\n".join(lines)


# ---------------------------------------------------------------- export
def cmd_export(args) -> int:
    from densescale.models.export import (
        export_sentence_transformers,
        load_cell,
        load_trained,
        select_cells,
    )

    src, out = Path(args.path), Path(args.out)
    try:
        if args.key or args.best_per_size:
            chosen = select_cells(src, key=args.key, best_per_size=args.best_per_size)
            # one folder per cell under --out for best-per-size, --out itself for one key
            targets = [(c, r, out / c.name if args.best_per_size else out) for c, r in chosen]
        else:
            targets = [(src, None, out)]
        for dest in {t[2] for t in targets}:  # refuse before any work
            if dest.is_dir() and any(dest.iterdir()) and not args.overwrite:
                raise ValueError(f"--out {dest} exists and is not empty; pass --overwrite")
        for cell, record, dest in targets:
            print(f"exporting {cell} ...", file=sys.stderr, flush=True)
            tm = load_cell(cell, record) if record is not None else load_trained(cell)
            export_sentence_transformers(tm, dest, overwrite=args.overwrite)
            ce = (tm.record or {}).get("ce")
            print(
                f"{dest}: {tm.name} N = {tm.N:,}, D = {tm.info.get('D')}, "
                + (f"CE {ce:.4f}, " if ce is not None else "")
                + ("scaled cosine" if tm.norm_scale else "dot product")
            )
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
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
    from densescale.study import StudyInterrupted, estimate_gpu_hours, load_study, run_study

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
    try:
        result = run_study(study, force=args.force)
    except KeyboardInterrupt as e:
        counted = isinstance(e, StudyInterrupted) and e.total
        done = f"{e.done}/{e.total} cells done; " if counted else ""
        argv = [a for a in getattr(args, "argv", None) or sys.argv[1:] if a != "--force"]
        print(
            f"\ninterrupted: {done}finished cells and training checkpoints are kept in "
            f"{study.output}.\nresume with: {shlex.join(['densescale', *argv])}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    print(f"\nresults: {study.output / 'results.jsonl'}")
    if result["report"] is not None:
        print(f"report:  {result['report']}")
    return 0


def cmd_report(args) -> int:
    from densescale.report import fit_study, write_report
    from densescale.scaling import LawChecks
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
        if isinstance(row.get("settings"), dict) and "passages" in row["settings"]:
            from densescale.study.prepare import describe_bm25_corpus

            row["corpus"] = describe_bm25_corpus(row["settings"])
        baselines[row.get("name", "BM25")] = row
        m = row.get("metrics", {})
        on = f" (on {row['corpus']})" if row.get("corpus") else ""
        print(
            f"  {row.get('name', 'BM25')} reference{on}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in m.items())
        )
    if not baselines:
        print(f"note: no bm25.<split>.json beside {results}: the report has no BM25 row")
    include = args.include_unconverged
    checks = LawChecks(
        min_r2=args.min_r2,
        min_points_over_params=args.min_points_over_params,
        max_ci_decades=args.max_ci_decades,
    )
    fits = fit_study(
        records, n_boot=args.n_boot, seed=0, include_unconverged=include, checks=checks
    )
    print(
        f"law checks (SPEC 7; a law failing any answers nothing): R^2 >= {checks.min_r2:g}, "
        f">= {checks.min_points_over_params:g} points per parameter, no parameter on a bound, "
        f"95% intervals within {checks.max_ci_decades:g} decades, forecast check passed"
    )
    for f in fits.values():
        print(f.describe())
    first = next(iter(fits.values()))
    if first.cost is not None:
        origin = first.cost_sources
        print(
            f"cost model: corpus_size = {first.cost.corpus_size:,.0f} passages "
            f"({origin.get('corpus_size', 'given')}); queries_served = "
            f"{first.cost.queries_served:.3g} ({origin.get('queries_served', 'given')})"
        )
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


# The paper's published MS MARCO joint law (SPEC 1.4) and the sizes it was fitted on: N from
# BERT-Tiny to BERT-Base (SPEC 1.2); D at most the full MS MARCO training qrels (532,761 pairs;
# the paper does not publish its smallest D, so only the upper end is known).
_PAPER_JOINT = {"A": 3.6e4, "B": 7.1e3, "alpha": 0.56, "beta": 1.31, "delta": 0.03}
_PAPER_RANGE = {"N": (512_128.0, 86_235_648.0), "D": (None, 532_761.0)}


def _fitted_law(entry: dict, name: str):
    """A joint law of fits.json with what its answers need (bootstrap, fitted range), or None
    and the one line saying why it may not answer (SPEC 7)."""
    import numpy as np

    from densescale.scaling import ChinchillaLaw, FitInfo, JointLaw

    if not entry:
        return None, f"the {name} was not attempted"
    if "params" not in entry:
        return None, f"the {name} was not fitted: {entry.get('error') or 'no reason recorded'}"
    if "usable" not in entry:
        return None, (
            f"the {name} in this fits.json predates the usability checks (SPEC 7); rerun "
            "`densescale report` to judge it"
        )
    if not entry["usable"]:
        return None, f"the {name} is {entry.get('usability', 'not usable')}"
    cls = JointLaw if entry.get("kind", "joint") == "joint" else ChinchillaLaw
    boot = entry.get("bootstrap")
    info = FitInfo(
        r2=float(entry.get("r2") or float("nan")),
        residuals=np.empty(0),
        log_residuals=np.empty(0),
        ci={k: tuple(v) for k, v in (entry.get("ci") or {}).items()},
        ci_level=float(entry.get("ci_level", 0.95)),
        n_points=int(entry.get("points", 0)),
        n_boot=0 if boot is None else len(boot),
        objective=float("nan"),
        huber_delta=float("nan"),
        bootstrap=None if not boot else np.asarray(boot, dtype=float),
        x_range={k: tuple(v) for k, v in (entry.get("fitted_range") or {}).items()},
    )
    return cls(**entry["params"]).with_fit(info), ""


def _size_text(axis: str, value: float, fitted: tuple) -> str:
    """ "N = 2.5e+10 (290x beyond the largest fitted, 8.62e+07)" and the like; ``fitted`` is
    (smallest, largest), the smallest None when unknown."""
    lo, hi = fitted
    text = f"{axis} = {value:.3g}"
    if value > hi:
        return text + f" ({value / hi:.3g}x beyond the largest fitted, {hi:.3g})"
    if lo is None:
        return text + f" (not beyond the largest fitted, {hi:.3g})"
    if value < lo:
        return text + f" ({lo / value:.3g}x below the smallest fitted, {lo:.3g})"
    return text + " (within the fitted range)"


def cmd_budget(args) -> int:
    from dataclasses import fields

    from densescale.report import plot_budget
    from densescale.scaling import CostModel, JointLaw, optimal_allocation

    cost_defaults, origins, box = {}, {}, {}
    if args.fits:
        payload = json.loads(Path(args.fits).read_text())
        sources = payload["sources"]
        source = args.source or next(iter(sources))
        if source not in sources:
            raise SystemExit(f"error: --source {source!r} not in {sorted(sources)}")
        entry = sources[source]
        law, why = _fitted_law(entry.get("joint") or {}, "joint law (paper form)")
        if law is None:
            additive, why_additive = _fitted_law(
                entry.get("chinchilla") or {}, "additive joint law"
            )
            if additive is None:
                if "params" in (entry.get("chinchilla") or {}):
                    why += f"; {why_additive}"
                print(f"no budget answer for source {source!r} ({args.fits}): {why}")
                return 1
            law = additive
        ranges = dict(law.fit.x_range)
        print(f"law: the joint law fitted on source {source!r} ({args.fits}), usable")
        print(f"  {law.describe()}")
        cost_defaults = payload.get("cost_model") or {}
        origins = payload.get("cost_model_sources") or {}
        if ranges:  # search where the report searched: a decade below, three above the data
            box = {
                "N_bounds": (ranges["N"][0] / 10, ranges["N"][1] * 1e3),
                "D_bounds": (ranges["D"][0] / 10, ranges["D"][1] * 1e3),
            }
    else:
        law = JointLaw(**_PAPER_JOINT)
        ranges = _PAPER_RANGE
        print(
            "law: the paper's published MS MARCO joint law (SPEC 1.4; Fang et al., SIGIR 2024), "
            "NOT fitted on your data; pass --fits <report>/fits.json to use your own"
        )
        print(f"  {law.describe()}")
        print(
            "  fitted on N = 5.12e+05 - 8.62e+07 (BERT-Tiny to BERT-Base) and D up to 5.33e+05 "
            "(the MS MARCO training qrels); its answers below say how far they extrapolate"
        )
    print(
        "  "
        + (
            "no parameter intervals (published constants)"
            if not law.ci
            else "95% intervals: "
            + ", ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in law.ci.items())
        )
    )
    known = {f.name for f in fields(CostModel)}
    values = {k: v for k, v in cost_defaults.items() if k in known and v is not None}
    for f in fields(CostModel):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
            origins[f.name] = "given on the command line"
    cost = CostModel(**values)
    corpus_from = (
        origins.get("corpus_size")
        or origins.get("all")
        or ("default: MS MARCO size; set --corpus-size for your collection")
    )
    queries_from = origins.get("queries_served") or "assumption"
    if queries_from.startswith("assumption"):
        queries_from += "; set --queries-served"
    print(
        f"cost model: corpus_size = {cost.corpus_size:,.0f} passages ({corpus_from}); "
        f"queries_served = {cost.queries_served:.3g} ({queries_from})"
    )
    for include in (False, True):
        a = optimal_allocation(law, cost, args.budget, include_inference=include, **box)
        band = law.interval(a.N, a.D)
        ce = f"{a.loss:.4f}" + (
            f" [{float(band[0]):.4f}, {float(band[1]):.4f}]"
            if band is not None
            else " (no interval: the law has no bootstrap)"
        )
        print(
            f"{'with' if include else 'without'} inference cost: "
            f"{_size_text('N', a.N, ranges['N'])}, {_size_text('D', a.D, ranges['D'])}, "
            f"predicted CE {ce}; annotation ${a.cost.annotation:,.0f}, "
            f"training ${a.cost.training:,.0f}, inference ${a.cost.inference:,.0f}"
            + (f"; on the search bound ({a.at_bound})" if a.at_bound else "")
        )
    if args.plot:
        plot_budget(
            law, cost, args.budget, args.plot, include_inference=not args.no_inference, **box
        )
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
    _add_collection_args(p)
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
        "default: the dot product of the model's embeddings",
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
