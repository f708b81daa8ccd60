"""Study files: a TOML description of a scaling study (collection, grid, training, evaluation,
executor), validated up front so a typo fails before hours of training start."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from densescale.train.config import TrainConfig
from densescale.train.pretrain import PretrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS = (
    "demo",
    "cpu-paper",
    "medquad",
    "medquad-sources",
    "medquad-finetune",
    "medquad-pretrained",
    "msmarco-paper",
)
COLLECTION_KINDS = ("synthetic", "beir", "msmarco", "irds")
DESIGNS = ("full", "cross")
EXECUTORS = ("local", "submitit")
RESULTS = "results.jsonl"


def _check_keys(table: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        table = "the top level of the study file" if where == "study" else f"[{where}]"
        raise ValueError(f"unknown key(s) {unknown} in {table}; known: {sorted(known)}")


@dataclass(frozen=True)
class Cell:
    """One grid point: train model ``model`` (a ladder size or a checkpoint) with embedding
    dimension ``out_dim`` on ``data_size`` pairs from ``source`` with ``seed``."""

    model: str
    data_size: int
    source: str
    seed: int
    out_dim: int = 768

    @property
    def key(self) -> str:
        dim = "" if self.out_dim == 768 else f"|d={self.out_dim}"
        return f"{self.model}{dim}|D={self.data_size}|{self.source}|seed={self.seed}"

    @property
    def dirname(self) -> str:
        from densescale.models import resolve_model

        dim = "" if self.out_dim == 768 else f"_d{self.out_dim}"
        slug = resolve_model(self.model).slug
        return f"{slug}{dim}_D{self.data_size}_{self.source}_s{self.seed}"


@dataclass(frozen=True)
class StudyConfig:
    name: str
    output: Path
    collection: dict
    models: tuple[str, ...]
    data_sizes: tuple[int, ...]
    sources: tuple[str, ...] = ("human",)
    seeds: tuple[int, ...] = (0,)
    design: str = "full"
    dims: tuple[int, ...] = (768,)
    tokenizer: dict = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    epochs: float = 0.0
    min_steps: int = 1
    lr_reference_width: int = 0
    pretrained_lr: float = 0.0
    norm_scale: float = 0.0
    eval: dict = field(default_factory=dict)
    executor: dict = field(default_factory=dict)
    estimate_gpu_hours: float = 0.0
    # [pretrain]: every ladder size is pretrained on the corpus before fine-tuning (None: not)
    pretrain: PretrainConfig | None = None

    @property
    def tokenizer_settings(self) -> dict:
        """``[tokenizer]`` with its defaults: the WordPiece vocabulary size, how many corpus
        passages train it, and a ready tokenizer folder (None: train one)."""
        return {"vocab_size": 8000, "train_texts": 200_000, "path": None, **self.tokenizer}

    def paths(self) -> dict[str, Path]:
        """Where the parts of the study folder live (the collection and tokenizer may be outside
        it when the study file names them)."""
        out, col = self.output, self.collection
        return {
            "out": out,
            "collection": Path(col["path"]) if col.get("path") else out / "collection",
            "tokenizer": Path(self.tokenizer["path"])
            if self.tokenizer.get("path")
            else out / "tokenizer",
            "results": out / RESULTS,
            "cells": out / "cells",
            "report": out / "report",
            "splits": out / "splits",
            "cache": out / "cache",
        }

    def cells(self) -> list[Cell]:
        """The grid, largest models and data sizes first so the slowest cells start early.

        ``full``: every model x data size x dimension. ``cross``: every model at the largest D
        and dimension, every D at the largest ladder model (the last ladder entry; checkpoints are
        model-size points only), every dimension at the largest model and D."""
        from densescale.models import resolve_model

        models = list(self.models)
        sizes = sorted(self.data_sizes, reverse=True)
        dims = sorted(self.dims, reverse=True)
        points: list[tuple[str, int, int]] = []
        if self.design == "full":
            points = [(m, d, k) for m in reversed(models) for d in sizes for k in dims]
        else:
            ladder = [m for m in models if not resolve_model(m).pretrained] or models
            points = [(m, sizes[0], dims[0]) for m in reversed(models)]
            points += [(ladder[-1], d, dims[0]) for d in sizes[1:]]
            points += [(ladder[-1], sizes[0], k) for k in dims[1:]]
        return [
            Cell(m, d, s, seed, out_dim=k)
            for s in self.sources
            for seed in self.seeds
            for m, d, k in points
        ]

    def lr_for(self, model: str) -> float:
        """Learning rate of a cell: ``train.lr``, or with ``lr_reference_width`` set, scaled by
        reference_width / hidden width (muP-style, so every size trains near its own optimum
        instead of the widest one diverging or the narrowest one crawling). A checkpoint is
        fine-tuned with ``train.pretrained_lr`` when set (a from-scratch rate would wreck it)."""
        from densescale.models import resolve_model

        spec = resolve_model(model)
        if spec.pretrained:
            return self.pretrained_lr or self.train.lr
        if not self.lr_reference_width:
            return self.train.lr
        return self.train.lr * self.lr_reference_width / spec.size.hidden

    def steps_for(self, data_size: int) -> int:
        """Training steps for a cell: ``epochs`` passes over its pairs, within [min_steps, max_steps]."""
        if self.epochs <= 0:
            return self.train.max_steps
        steps = math.ceil(self.epochs * data_size / self.train.batch_size)
        return int(min(self.train.max_steps, max(self.min_steps, steps)))


def load_study(
    path: str | Path | None = None, *, preset: str | None = None, output: str | Path | None = None
) -> StudyConfig:
    """Read a study TOML file, or a packaged preset (one of ``PRESETS``)."""
    if (path is None) == (preset is None):
        raise ValueError("give exactly one of a study file path or preset=")
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
        text = resources.files("densescale.study.presets").joinpath(f"{preset}.toml").read_text()
        source = f"preset {preset}"
    else:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"study file {p} does not exist")
        text, source = p.read_text(), str(p)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source}: invalid TOML: {e}") from None
    cfg = parse_study(raw)
    if output is not None:
        cfg = dataclasses.replace(cfg, output=Path(output))
    return cfg


def parse_study(raw: dict) -> StudyConfig:
    _check_keys(
        raw,
        {
            "name",
            "output",
            "collection",
            "grid",
            "tokenizer",
            "train",
            "eval",
            "executor",
            "estimate_gpu_hours",
            "pretrain",
        },
        "study",
    )
    for table in ("collection", "grid"):
        if table not in raw:
            raise ValueError(f"study file needs a [{table}] table")
    col = dict(raw["collection"])
    _check_keys(
        col,
        {
            "kind",
            "path",
            "id",
            "synthetic",
            "collection",
            "queries",
            "qrels_train",
            "qrels_dev",
            "qrels_test",
            "doc2query_model",
            "llm_model",
            "llm_prompt",
        },
        "collection",
    )
    if col.get("kind") not in COLLECTION_KINDS:
        raise ValueError(
            f"collection.kind must be one of {COLLECTION_KINDS}, got {col.get('kind')!r}"
        )
    if col["kind"] == "beir" and not col.get("path"):
        raise ValueError("collection.path is required for kind='beir'")
    if col["kind"] == "irds" and not col.get("id"):
        raise ValueError("collection.id is required for kind='irds' (e.g. 'beir/scifact')")

    grid = dict(raw["grid"])
    _check_keys(grid, {"models", "data_sizes", "sources", "seeds", "design", "dims"}, "grid")
    models = tuple(grid.get("models", ()))
    sizes = tuple(grid.get("data_sizes", ()))
    if not models:
        raise ValueError("grid.models must list at least one model size")
    if not sizes or any((not isinstance(d, int)) or d < 1 for d in sizes):
        raise ValueError(f"grid.data_sizes must be positive integers, got {list(sizes)}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"grid.data_sizes has duplicates: {list(sizes)}")
    from densescale.data.annotations import parse_source

    sources = tuple(grid.get("sources", ("human",)))
    if len(set(sources)) != len(sources):
        raise ValueError(f"grid.sources has duplicates: {list(sources)}")
    for s in sources:
        try:
            kind, _ = parse_source(s)
        except (TypeError, ValueError) as e:
            raise ValueError(f"grid.sources entries: {e}") from None
        key = {"doc2query": "doc2query_model", "llm": "llm_model"}.get(kind)
        if key and not col.get(key):
            raise ValueError(
                f"grid.sources lists {s!r}: set collection.{key} to a local model folder"
            )
    design = grid.get("design", "full")
    if design not in DESIGNS:
        raise ValueError(f"grid.design must be one of {DESIGNS}, got {design!r}")
    seeds = tuple(int(s) for s in grid.get("seeds", (0,)))
    dims = tuple(grid.get("dims", (768,)))
    if not dims or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in dims):
        raise ValueError(f"grid.dims must be positive integers (embedding dimensions), got {dims}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"grid.dims has duplicates: {list(dims)}")

    from densescale.models import resolve_model

    for m in models:
        if not isinstance(m, str):
            raise TypeError(f"grid.models entries must be strings, got {m!r}")
        try:
            resolve_model(m)
        except ValueError as e:
            raise ValueError(f"grid.models: {e}") from None

    train_raw = dict(raw.get("train", {}))
    epochs = float(train_raw.pop("epochs", 0.0))
    min_steps = int(train_raw.pop("min_steps", 1))
    lr_width = int(train_raw.pop("lr_reference_width", 0))
    pretrained_lr = float(train_raw.pop("pretrained_lr", 0.0))
    norm_scale = float(train_raw.pop("norm_scale", 0.0))
    if epochs < 0 or min_steps < 1 or lr_width < 0:
        raise ValueError(
            "train.epochs and train.lr_reference_width must be >= 0, train.min_steps >= 1"
        )
    if pretrained_lr < 0 or norm_scale < 0:
        raise ValueError(
            f"train.pretrained_lr and train.norm_scale must be >= 0, got {pretrained_lr} and "
            f"{norm_scale}"
        )
    try:
        train = TrainConfig.from_dict(train_raw)
    except ValueError as e:
        if "unknown training option" not in str(e):
            raise
        study_keys = ["epochs", "lr_reference_width", "min_steps", "norm_scale", "pretrained_lr"]
        raise ValueError(f"[train]: {e}; study-level keys: {study_keys}") from None

    tok = dict(raw.get("tokenizer", {}))
    _check_keys(tok, {"vocab_size", "path", "train_texts"}, "tokenizer")
    if tok.get("vocab_size", 8000) < 100:
        raise ValueError(f"tokenizer.vocab_size must be >= 100, got {tok.get('vocab_size')}")

    ev = dict(raw.get("eval", {}))
    _check_keys(
        ev,
        {
            "split",
            "k",
            "num_negatives",
            "repeats",
            "pool_size",
            "max_queries",
            "corpus_limit",
            "batch_size",
            "relevance_level",
        },
        "eval",
    )
    for key in (
        "k",
        "num_negatives",
        "repeats",
        "batch_size",
        "max_queries",
        "corpus_limit",
        "relevance_level",
    ):
        least = 0 if key in ("max_queries", "corpus_limit") else 1  # 0: no cap
        v = ev.get(key, least)
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise ValueError(f"eval.{key} must be an integer >= {least}, got {v!r}")
    pool = ev.get("pool_size")
    if pool is not None and pool != 0:
        if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
            raise ValueError(f"eval.pool_size must be a positive integer, got {pool!r}")
        if pool < ev.get("num_negatives", 256):
            raise ValueError(
                f"eval.pool_size={pool} is smaller than eval.num_negatives="
                f"{ev.get('num_negatives', 256)} (each pair draws that many distinct negatives)"
            )
    if not isinstance(ev.get("split", "test"), str):
        raise TypeError(f"eval.split must be a split name, got {ev['split']!r}")

    ex = dict(raw.get("executor", {}))
    _check_keys(ex, {"kind", "workers", "threads_per_worker", "submitit"}, "executor")
    if ex.get("kind", "local") not in EXECUTORS:
        raise ValueError(f"executor.kind must be one of {EXECUTORS}, got {ex.get('kind')!r}")
    if ex.get("workers", 1) < 1:
        raise ValueError(f"executor.workers must be >= 1, got {ex.get('workers')}")

    pretrain = None
    if "pretrain" in raw:
        if not isinstance(raw["pretrain"], dict):
            raise TypeError(f"[pretrain] must be a table, got {raw['pretrain']!r}")
        try:
            pretrain = PretrainConfig.from_dict(raw["pretrain"])
        except TypeError as e:  # a value of the wrong type in a check
            raise ValueError(f"[pretrain]: {e}") from None

    return StudyConfig(
        name=str(raw.get("name", "study")),
        output=Path(raw.get("output", f"studies/{raw.get('name', 'study')}")),
        collection=col,
        models=models,
        data_sizes=sizes,
        sources=sources,
        seeds=seeds,
        design=design,
        dims=dims,
        tokenizer=tok,
        train=train,
        epochs=epochs,
        min_steps=min_steps,
        lr_reference_width=lr_width,
        pretrained_lr=pretrained_lr,
        norm_scale=norm_scale,
        eval=ev,
        executor=ex,
        estimate_gpu_hours=float(raw.get("estimate_gpu_hours", 0.0)),
        pretrain=pretrain,
    )


def estimate_gpu_hours(
    study: StudyConfig, *, corpus_size: int | None = None, flops_per_second: float = 0.4 * 989e12
) -> float:
    """Rough compute of a study in H100-hours: training ~ 6 * N * tokens seen (queries, positives
    and the shared negatives of every step), evaluation ~ 2 * N * corpus tokens per cell, at 40% of
    the bf16 datasheet peak, plus the ``[pretrain]`` stage once per ladder size and seed
    (:func:`densescale.study.pretraining.pretrain_flops_estimate`). Used to warn before a study
    that needs a cluster."""
    from densescale.models import resolve_model
    from densescale.study.pretraining import pretrain_flops_estimate

    cfg = study.train
    if corpus_size is None:
        corpus_size = 8_841_823 if study.collection["kind"] == "msmarco" else 100_000
    total = 0.0
    for cell in study.cells():
        shape = resolve_model(cell.model).shape()
        if shape is None:
            continue  # a hub checkpoint of unknown shape: not counted
        n = shape.non_embedding_params(cell.out_dim)
        steps = study.steps_for(cell.data_size)
        tokens = steps * (
            cfg.batch_size
            * (cfg.query_max_length + cfg.passage_max_length * (1 + cfg.group_negatives))
            + cfg.num_negatives * cfg.passage_max_length
        )
        total += 6 * n * tokens + 2 * n * corpus_size * cfg.passage_max_length
    total += pretrain_flops_estimate(study)
    return total / flops_per_second / 3600
