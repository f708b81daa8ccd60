"""One grid cell, the study's unit of work: a plain function from (study, cell) to the cell's record,
with no global state, so any executor can run it (:mod:`densescale.study.executors`).

:func:`cell_config` is everything the record depends on (the cell's resolved training config, the
evaluation settings, model, d, D, source, seed, tokenizer and the collection fingerprint);
:func:`config_hash` names it. The cell's folder carries it in ``cell.json``, and a folder left by
another config is moved to ``superseded/`` before training, so a checkpoint of an old config is
never resumed. The record carries ``config_hash``, ``config`` and the densescale version (for
information only; it is not part of the hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from densescale.data.trec import atomic_write_text
from densescale.study.config import Cell, StudyConfig
from densescale.study.prepare import NEAR_CHANCE, cell_inputs, evaluation_args
from densescale.study.store import ResultsStore

CELL_CONFIG = "cell.json"
# training options that change what is logged or how often state is saved, never the result
_NOT_IN_RESULT = ("log_every", "tensorboard", "checkpoint_every")
EVAL_DEFAULTS = {
    "split": "test",
    "k": 100,
    "num_negatives": 256,
    "repeats": 10,
    "pool_size": None,
    "max_queries": None,
    "corpus_limit": None,
    "batch_size": 256,
    "relevance_level": 1,
}
# |dev CE / its chance - test CE / its chance| above this: dev does not predict test (a dev split
# unlike test, or test positives the model was trained towards); flagged as "dev_test_gap"
DEV_TEST_GAP = 0.15


def cell_train_config(study: StudyConfig, cell: Cell):
    """The cell's TrainConfig: the study's, with its step budget, learning rate and seed."""
    return dataclasses.replace(
        study.train,
        max_steps=study.steps_for(cell.data_size),
        lr=study.lr_for(cell.model),
        seed=cell.seed,
        batch_size=min(study.train.batch_size, cell.data_size),
    )


def cell_config(study: StudyConfig, cell: Cell, fingerprint: str) -> tuple[dict, str]:
    """Everything the cell's record depends on, as plain JSON data, and its hash."""
    from densescale.models import resolve_model

    train = cell_train_config(study, cell).to_dict()
    for key in _NOT_IN_RESULT:
        train.pop(key, None)
    tokenizer = None
    if not resolve_model(cell.model).pretrained:
        tokenizer = study.tokenizer_settings
    collection = {"fingerprint": fingerprint}
    from densescale.data.annotations import parse_source

    kind, _ = parse_source(cell.source)
    if kind == "doc2query":
        collection["doc2query_model"] = study.collection.get("doc2query_model")
    elif kind == "llm":  # a generated source depends on its generator and prompt
        collection["llm_model"] = study.collection.get("llm_model")
        collection["llm_prompt"] = study.collection.get("llm_prompt")
    config = {
        "model": cell.model,
        "d": cell.out_dim,
        "D": cell.data_size,
        "source": cell.source,
        "seed": cell.seed,
        "train": train,
        "norm_scale": study.norm_scale,
        "tokenizer": tokenizer,
        "eval": {**EVAL_DEFAULTS, **study.eval},
        "collection": collection,
    }
    from densescale.study.pretraining import pretrain_key

    keyed = pretrain_key(study, cell, fingerprint)
    if keyed is not None:  # only then: the hashes of cells without the stage stay as they were
        config["pretrain"] = {**keyed[0]["pretrain"], "cache_key": keyed[1]}
    return config, config_hash(config)


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def changed_settings(old: dict | None, new: dict) -> list[str]:
    """Dotted names of the settings that differ between two cell configs (``["?"]`` when the old
    one was not recorded)."""
    if not old:
        return ["?"]
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def retire(path: Path, into: Path, tag: str) -> Path:
    """Move ``path`` to ``into/<name>.<tag>`` (numbered when taken); nothing is deleted."""
    into.mkdir(parents=True, exist_ok=True)
    dest, n = into / f"{path.name}.{tag}", 1
    while dest.exists():
        dest, n = into / f"{path.name}.{tag}-{n}", n + 1
    path.rename(dest)
    return dest


def _claim_cell_dir(cell_dir: Path, config: dict, digest: str) -> None:
    """Make ``cell_dir`` hold this config: a folder left by another config (or by a densescale
    that did not record one) moves to ``<study>/superseded/`` first."""
    from densescale import __version__

    stamp = cell_dir / CELL_CONFIG
    if cell_dir.is_dir() and any(cell_dir.iterdir()):
        old = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if old.get("config_hash") == digest:
            return
        retire(
            cell_dir, cell_dir.parent.parent / "superseded", old.get("config_hash", "unrecorded")
        )
    cell_dir.mkdir(parents=True, exist_ok=True)
    stamp_data = {"config_hash": digest, "config": config, "densescale": __version__}
    atomic_write_text(stamp, json.dumps(stamp_data, indent=2, sort_keys=True) + "\n")


def fit_lengths(cfg, model):
    """``cfg`` with its query / passage lengths cut to what the model can embed (a checkpoint
    may have fewer positions than the study's passage length)."""
    cap = model.config.max_position
    if cfg.query_max_length <= cap and cfg.passage_max_length <= cap:
        return cfg
    print(f"  lengths cut to the model's {cap} positions", flush=True)
    return dataclasses.replace(
        cfg,
        query_max_length=min(cfg.query_max_length, cap),
        passage_max_length=min(cfg.passage_max_length, cap),
    )


def _flags(record: dict, result) -> list[str]:
    flags = []
    if record["near_chance"]:
        flags.append("near_chance")
    if not result.converged:
        flags.append("not_converged")
        if result.convergence in ("peaked_early", "memorising", "above_chance"):
            flags.append(result.convergence)
    if record.get("seen_bias", {}).get("decides_ranking"):
        flags.append("seen_passage_bias")
    if record.get("dev_test_gap") is not None and abs(record["dev_test_gap"]) > DEV_TEST_GAP:
        flags.append("dev_test_gap")
    return flags


def _dev_test_gap(result, test_ce: float, chance: float) -> float | None:
    """Best dev CE minus test CE, each as a fraction of its own chance level ln(K+1)."""
    if result.best_dev_ce is None or not result.dev_chance:
        return None
    return result.best_dev_ce / result.dev_chance - test_ce / chance


def run_cell(
    study: StudyConfig, cell: Cell, *, threads: int | None = None, progress: bool = False
) -> dict:
    """Train and evaluate one grid cell; append its record to the store and return it.

    A record of the same cell and config already in the store is returned as it is; one of
    another config is superseded (moved to ``superseded.jsonl``) and the cell recomputed.
    The record carries its yardsticks: ``chance_ce`` (ln(K+1)), ``oracle_ce`` where the collection
    knows it, ``converged`` (dev CE stopped improving before the step cap), ``near_chance``
    (CE >= 0.9 x chance: the model has not learned to rank), the seen-passage bias, and
    ``flags`` naming what is wrong."""
    import torch

    from densescale import __version__
    from densescale.eval import above_chance, evaluate
    from densescale.models import num_non_embedding_params
    from densescale.models.trained import write_model_json
    from densescale.train import train

    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    paths = study.paths()
    inputs = cell_inputs(study, cell)
    config, digest = cell_config(study, cell, inputs["fingerprint"])
    store = ResultsStore(paths["results"])
    old = next((r for r in store.records() if r.get("key") == cell.key), None)
    if old is not None and old.get("config_hash") == digest:
        return old
    if old is not None:
        store.supersede([cell.key])
    cell_dir = paths["cells"] / cell.dirname
    _claim_cell_dir(cell_dir, config, digest)

    spec, tokenizer = inputs["spec"], inputs["tokenizer"]
    model = spec.build(tokenizer, out_dim=cell.out_dim, norm_scale=study.norm_scale, seed=cell.seed)
    from densescale.study.pretraining import pretrained_body

    # the cached pretrained body, shared by every cell of this size and seed (None: no stage)
    pretrained = pretrained_body(study, cell, model, inputs, progress=progress)
    cfg = fit_lengths(cell_train_config(study, cell), model)
    train_pairs = inputs["train_pairs"]
    result = train(
        model,
        tokenizer,
        train_pairs,
        inputs["corpus"],
        cell_dir,
        cfg,
        dev_pairs=inputs["dev_pairs"],
        negative_pool=inputs["negative_pool"],
        progress=progress,
    )
    model.load_state_dict(
        torch.load(cell_dir / "best_model.pt", map_location="cpu", weights_only=True)
    )
    # the cell loads with nothing from the study file: encoder config, tokenizer, scoring
    write_model_json(
        cell_dir,
        model,
        tokenizer,
        name=cell.model,
        checkpoint=spec.checkpoint,
        query_max_length=min(32, model.config.max_position),
        passage_max_length=cfg.passage_max_length,
        D=cell.data_size,
        source=cell.source,
        seed=cell.seed,
        key=cell.key,
        study=study.name,
        converged=result.converged,
        convergence=result.convergence,
        config=cfg.to_dict(),
    )

    ev, ev_cfg = inputs["eval"], config["eval"]
    record = evaluate(
        model,
        tokenizer,
        **evaluation_args(ev, train_pairs),
        k=ev_cfg["k"],
        num_negatives=int(ev_cfg["num_negatives"]),
        repeats=ev_cfg["repeats"],
        seed=0,
        pool_size=ev_cfg["pool_size"] or None,
        query_max_length=min(32, model.config.max_position),
        passage_max_length=cfg.passage_max_length,
        batch_size=ev_cfg["batch_size"],
        device=cfg.device
        if cfg.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu"),
        run_path=cell_dir / f"run.{ev['split']}.trec",
        relevance_level=ev_cfg["relevance_level"],
        progress=progress,  # encoding millions of passages takes a while: show its ETA
    )
    chance = inputs["chance_ce"]
    record["near_chance"] = record["ce"] >= NEAR_CHANCE * chance
    # ranking metrics judged against a random ranking, not by CE: signal even near CE's chance
    record["metrics_above_chance"] = above_chance(
        record["metrics"], record["metrics_stderr"], record["metrics_chance"]
    )
    record["dev_test_gap"] = _dev_test_gap(result, record["ce"], chance)
    # the collection's corpus (the cost model's inference cost), not the evaluated sub-corpus
    record["corpus_size"] = len(inputs["corpus"])
    if ev["overlap"] is not None:
        record["overlap"] = ev["overlap"].to_dict()
    if pretrained is not None:  # its cost: tokens and FLOPs of the (shared) pretraining
        record["pretrain"] = pretrained
    record.update(
        {
            "key": cell.key,
            "study": study.name,
            "model": cell.model,
            "checkpoint": cell.model if spec.pretrained else None,
            "N": num_non_embedding_params(model),
            "d": cell.out_dim,
            "D": cell.data_size,
            "source": cell.source,
            "seed": cell.seed,
            "split": ev["split"],
            "chance_ce": chance,
            "oracle_ce": inputs["oracle_ce"],
            "converged": result.converged,
            "convergence": result.convergence,
            "flags": _flags(record, result),
            "train": {
                "steps": result.steps,
                "best_step": result.best_step,
                "best_dev_ce": result.best_dev_ce,
                "stop_reason": result.stop_reason,
                "convergence": result.convergence,
                "dev_chance": result.dev_chance,
                "max_steps": cfg.max_steps,
                "lr": cfg.lr,
                "tokens_per_second": result.tokens_per_second,
                "seconds": result.seconds,
            },
            "config_hash": digest,
            "config": config,
            "densescale": __version__,
            "seconds": time.perf_counter() - t0,
        }
    )
    store.append(record)
    return record
