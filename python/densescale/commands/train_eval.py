"""``densescale train`` and ``densescale eval`` (a trained run, a study cell or any
sentence-transformers model, zero-shot), and ``densescale search``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from ._common import collection_from_args, read_toml


def cmd_train(args) -> int:

    from densescale import data
    from densescale.models import (
        load_checkpoint_tokenizer,
        num_non_embedding_params,
        resolve_model,
        train_tokenizer,
    )
    from densescale.models.trained import write_model_json
    from densescale.study.cell import fit_lengths
    from densescale.study.prepare import negative_pool_of
    from densescale.train import TrainConfig, train
    from densescale.train.result import describe_convergence

    spec = resolve_model(args.model)  # an unknown size fails before any data is read
    conf = read_toml(args.config).get("train", {})
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
        tokenizer = load_checkpoint_tokenizer(spec.checkpoint)
    col = collection_from_args(args, splits_dir=out / "splits")
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
    model = spec.build(tokenizer, out_dim=args.out_dim, norm_scale=norm_scale, seed=cfg.seed)
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
    write_model_json(
        out,
        model,
        tokenizer,
        name=args.model,
        checkpoint=spec.checkpoint,
        query_max_length=cfg.query_max_length,
        passage_max_length=cfg.passage_max_length,
        D=len(pairs),
        source=args.source,
        collection=args.collection or "synthetic",
        converged=result.converged,
        convergence=result.convergence,
        config=cfg.to_dict(),
    )
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
    from densescale.models.st_encoder import (
        is_sentence_transformers_folder,
        load_sentence_transformer,
    )
    from densescale.models.trained import load_trained

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
    try:  # --score-scale is checked against the model's own norm_scale, never applied to it
        tm = load_trained(args.model_dir, norm_scale=args.score_scale or None)
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

    conf = read_toml(args.config).get("eval", {})
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
    _check_cell_collection(args, trained)
    col = collection_from_args(args)
    split = args.split or conf.get("split", "test")
    qrels = col.qrels(split)
    qids = sorted(qrels)
    queries = col.queries
    # [eval] max_queries / corpus_limit as a study applies them, so a cell's number reproduces
    max_q = conf.get("max_queries")
    if max_q and len(qids) > max_q:
        import numpy as np

        keep = np.random.default_rng(0).choice(len(qids), max_q, replace=False)
        qids = [qids[i] for i in sorted(keep)]
        qrels = {q: qrels[q] for q in qids}
    from densescale.study.prepare import eval_corpus_rows

    rows = eval_corpus_rows(col.corpus, qrels, conf.get("corpus_limit"))
    corpus = col.corpus if rows is None else col.corpus.select(rows)
    if rows is not None or max_q:
        print(
            f"evaluating {len(qids):,} {split} queries over {len(corpus):,} of the "
            f"{len(col.corpus):,} passages ([eval] max_queries / corpus_limit)",
            file=sys.stderr,
        )
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
        corpus_ids=corpus.ids,
        corpus_texts=_prefixed(corpus, prompts.get("document", "")),
        query_ids=qids,
        query_texts=[prompts.get("query", "") + queries[queries.index(q)] for q in qids],
        qrels=qrels,
        k=args.k or conf.get("k", 100),
        num_negatives=conf.get("num_negatives", 256),
        repeats=conf.get("repeats", 10),
        relevance_level=conf.get("relevance_level", 1),
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
    bm25 = _study_bm25(trained, record)
    if bm25 is None and args.bm25:
        from densescale.eval import bm25_baseline

        bm25 = bm25_baseline(
            col,
            split,
            k=record["k"],
            corpus_ids=corpus.ids,
            corpus_texts=corpus,
            query_ids=qids,
            relevance_level=conf.get("relevance_level", 1),
        )
    if bm25 is not None:
        record["bm25"] = bm25.get("metrics")
    if args.fits:
        from densescale.report.placements import place_record

        record["placement"] = dataclasses.asdict(place_record(record, args.fits))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)
    print(json.dumps(record, indent=2))
    print(_eval_summary(record, out), file=sys.stderr)
    return 0


def _check_cell_collection(args, trained) -> None:
    """A study cell is evaluated on its study's collection: without ``--collection`` the default
    (the embedded synthetic collection, not the study's) would give numbers that mean nothing for
    it, so say what to pass instead."""
    if trained is None or trained.kind != "cell" or args.collection is not None:
        return
    study = Path(trained.path).parent.parent
    table = {}
    if (study / "study.json").is_file():
        table = json.loads((study / "study.json").read_text()).get("collection") or {}
    where = table.get("path") or table.get("id") or "<its collection>"
    raise SystemExit(
        f"error: --collection: cell {trained.path} was trained and evaluated on study "
        f"{study.name!r}'s collection ({table.get('kind', 'see its study.json')}); evaluate it "
        "there: "
        f"--collection {where} --config <the study file> (its [eval] settings reproduce the "
        "cell's numbers). Without --collection eval would use the synthetic collection."
    )


def _study_bm25(trained, record: dict) -> dict | None:
    """The study's BM25 row, only when this evaluation has the study's scope (same split, queries
    and passages); otherwise a BM25 row of another scope would be read as this one's yardstick."""
    if trained is None or trained.bm25 is None or trained.record is None:
        return None
    same = all(
        trained.record.get(k) == record.get(k) for k in ("split", "num_queries", "num_passages")
    )
    if not same:
        print(
            "note: the study's BM25 row was measured on another scope (split, queries or "
            "passages) than this evaluation; pass --bm25 for one on this scope",
            file=sys.stderr,
        )
        return None
    return trained.bm25


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
