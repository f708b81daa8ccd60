"""Trained densescale models rebuilt from their own folders.

:func:`load_trained` rebuilds any trained model with everything it needs from its folder: a run
(``densescale train --out DIR``: ``model.json`` + ``best_model.pt``) or a study cell
(``<study>/cells/<dirname>``: ``cell.json`` + ``best_model.pt``, its record in the study's
``results.jsonl``). :func:`select_cells` picks cells of a study by key or as the best (lowest dev
CE) of each model size. :mod:`densescale.models.export` writes them as sentence-transformers
folders.

Every trained model writes ``model.json`` (:func:`write_model_json`): its encoder config (every
shape, ``out_dim``, ``norm_scale``), its tokenizer (a copy in ``<folder>/tokenizer``) and its
scoring, so loading needs nothing from a study file. A cell folder written before cells carried
``model.json`` loads from ``cell.json``, the study's tokenizer and the weights' shapes.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .encoder import DenseEncoder, DenseEncoderConfig, num_non_embedding_params

RUN_META = "model.json"
CELL_CONFIG = "cell.json"
WEIGHTS = "best_model.pt"
RESULTS = "results.jsonl"
TOKENIZER_DIR = "tokenizer"


@dataclass
class TrainedModel:
    """A trained dual encoder with what it was trained and evaluated on.

    Attributes:
        model: the encoder (eval mode, CPU).
        tokenizer: its fast tokenizer.
        kind: ``"run"`` or ``"cell"``.
        path: the run or cell folder.
        name: the model as the run or study named it (ladder size or checkpoint).
        checkpoint: the checkpoint it was fine-tuned from, None for a ladder model.
        query_max_length, passage_max_length: the token lengths it was trained and evaluated with.
        info: the rest: D, source, seed, converged, convergence, train (recipe), collection, key.
        record: its evaluation record (``ce``, ``chance_ce``, ``metrics``...), None when absent.
        bm25: the study's BM25 row on the same split, None when absent.
    """

    model: DenseEncoder
    tokenizer: object
    kind: str
    path: Path
    name: str
    checkpoint: str | None
    query_max_length: int
    passage_max_length: int
    info: dict = field(default_factory=dict)
    record: dict | None = None
    bm25: dict | None = None

    @property
    def N(self) -> int:
        return num_non_embedding_params(self.model)

    @property
    def norm_scale(self) -> float:
        return self.model.config.norm_scale


# ---------------------------------------------------------------- loading
def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {e}") from None


def _state_dict(folder: Path) -> dict:
    f = folder / WEIGHTS
    if not f.is_file():
        raise ValueError(
            f"path {str(folder)!r} has no {WEIGHTS}: not a trained run or cell (training never "
            "reached its first evaluation, or the folder is something else)"
        )
    return torch.load(f, map_location="cpu", weights_only=True)


def _build(config: DenseEncoderConfig, checkpoint: str | None, state: dict) -> DenseEncoder:
    """An encoder of ``config`` with ``state`` loaded; a fine-tuned model takes the BERT settings
    of its checkpoint's config.json (activation, layer-norm epsilon...), not the ladder's."""
    bert = None
    if checkpoint is not None:
        from transformers import AutoConfig, BertModel

        try:
            bert_config = AutoConfig.from_pretrained(checkpoint)
        except OSError as e:
            from .checkpoints import _unreachable

            raise ValueError(_unreachable(checkpoint, e)) from None
        bert = BertModel(bert_config, add_pooling_layer=True)
    model = DenseEncoder(config, bert=bert)
    out_dim = state.get("proj.weight", torch.empty(0, 0)).shape[0]
    if out_dim != config.out_dim:
        raise ValueError(
            f"the saved weights project to {out_dim} dimensions but the recorded config says "
            f"out_dim = {config.out_dim}"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _config_from_state(
    state: dict, heads: int, norm_scale: float, pad_token_id: int
) -> DenseEncoderConfig:
    """The encoder config that the weights themselves fix (every shape), plus what they cannot:
    the number of heads and ``norm_scale``."""
    layers = {
        int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))
    }
    words = state["bert.embeddings.word_embeddings.weight"]
    return DenseEncoderConfig(
        layers=len(layers),
        hidden=words.shape[1],
        heads=heads,
        intermediate=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        vocab_size=words.shape[0],
        out_dim=state["proj.weight"].shape[0],
        max_position=state["bert.embeddings.position_embeddings.weight"].shape[0],
        pad_token_id=pad_token_id,
        norm_scale=float(norm_scale),
    )


def _meta_tokenizer(folder: Path, meta: dict):
    """The tokenizer model.json names: the folder's own copy first (a path written from another
    working directory may no longer resolve), then the recorded path, then the checkpoint's."""
    from .checkpoints import load_checkpoint_tokenizer
    from .tokenizer import load_tokenizer

    own = folder / TOKENIZER_DIR
    if (own / "tokenizer.json").is_file() or (own / "tokenizer_config.json").is_file():
        return load_tokenizer(own)
    if meta.get("checkpoint"):
        return load_checkpoint_tokenizer(meta["checkpoint"])
    return load_tokenizer(Path(meta.get("tokenizer") or own))


def _load_run(folder: Path) -> TrainedModel:
    meta = _read_json(folder / RUN_META, "model.json")
    checkpoint = meta.get("checkpoint")
    tokenizer = _meta_tokenizer(folder, meta)
    state = _state_dict(folder)
    if "encoder" in meta:
        config = DenseEncoderConfig.from_dict(meta["encoder"])
    else:  # written before model.json held the encoder config: the weights fix every shape
        from .sizes import resolve_size

        config = _config_from_state(state, resolve_size(meta["model"]).heads, 0.0, 0)
    model = _build(config, checkpoint or None, state)
    train = meta.get("config", {})
    record = None
    evals = sorted(folder.glob("eval.*.json"))
    if evals:
        record = _read_json(evals[0], "evaluation record")
    return TrainedModel(
        model=model,
        tokenizer=tokenizer,
        kind="run",
        path=folder,
        name=meta.get("model", "?"),
        checkpoint=checkpoint or None,
        query_max_length=int(train.get("query_max_length", 32)),
        passage_max_length=int(train.get("passage_max_length", 180)),
        info={
            "D": meta.get("D"),
            "source": meta.get("source"),
            "seed": train.get("seed"),
            "converged": meta.get("converged"),
            "convergence": meta.get("convergence"),
            "train": train,
            "collection": meta.get("collection"),
        },
        record=record,
    )


def _study_records(study: Path) -> list[dict]:
    path = study / RESULTS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted study
    return out


def _bm25(study: Path, split: str | None) -> dict | None:
    f = study / f"bm25.{split}.json"
    return json.loads(f.read_text()) if split and f.is_file() else None


def _load_cell(folder: Path, record: dict | None = None) -> TrainedModel:
    from .checkpoints import load_checkpoint_tokenizer, resolve_model
    from .tokenizer import load_tokenizer

    stamp = _read_json(folder / CELL_CONFIG, "cell.json")
    config = stamp.get("config") or {}
    study = folder.parent.parent
    if record is None:
        digest = stamp.get("config_hash")
        matches = [r for r in _study_records(study) if r.get("config_hash") == digest]
        record = matches[-1] if matches else None
    spec = resolve_model(config["model"])
    meta = _read_json(folder / RUN_META, "model.json") if (folder / RUN_META).is_file() else None
    if meta is not None:
        tokenizer = _meta_tokenizer(folder, meta)
    elif spec.pretrained:
        tokenizer = load_checkpoint_tokenizer(spec.checkpoint)
    else:  # a cell written before cells carried model.json: the study's tokenizer
        tok = (config.get("tokenizer") or {}).get("path")
        tokenizer = load_tokenizer(Path(tok) if tok else study / "tokenizer")
    state = _state_dict(folder)
    if meta is not None and "encoder" in meta:
        enc = DenseEncoderConfig.from_dict(meta["encoder"])
        _agree(folder, "norm_scale", enc.norm_scale, config.get("norm_scale"), CELL_CONFIG)
    else:
        shape = spec.shape()
        heads = shape.heads if shape is not None else 1
        enc = _config_from_state(
            state, heads, config.get("norm_scale", 0.0), tokenizer.pad_token_id or 0
        )
    if enc.out_dim != config.get("d", enc.out_dim):
        raise ValueError(
            f"cell {str(folder)!r}: its weights project to {enc.out_dim} dimensions, its config "
            f"to d = {config['d']}"
        )
    model = _build(enc, spec.checkpoint, state)
    train = config.get("train", {})
    rec = record or {}
    return TrainedModel(
        model=model,
        tokenizer=tokenizer,
        kind="cell",
        path=folder,
        name=config["model"],
        checkpoint=spec.checkpoint,
        query_max_length=min(32, enc.max_position),
        passage_max_length=min(int(train.get("passage_max_length", 180)), enc.max_position),
        info={
            "D": config.get("D"),
            "source": config.get("source"),
            "seed": config.get("seed"),
            "converged": rec.get("converged"),
            "convergence": rec.get("convergence"),
            "train": {**train, **(rec.get("train") or {})},
            "study": rec.get("study") or study.name,
            "key": rec.get("key"),
            "collection": config.get("collection"),
        },
        record=record,
        bm25=_bm25(study, rec.get("split")),
    )


def _agree(folder: Path, name: str, saved, given, where: str, saved_in: str = RUN_META) -> None:
    """Raise when ``given`` (a caller's or another file's value of ``name``) contradicts the
    saved config (read from ``saved_in``); None agrees with anything."""
    if given is None or float(given) == float(saved):
        return
    raise ValueError(
        f"{name} = {float(given):g} ({where}) contradicts the saved config of "
        f"{str(folder)!r}, {name} = {float(saved):g} ({saved_in}): a trained model carries its "
        f"own {name}; omit it, or load the model it was meant for"
    )


def load_trained(
    path: str | os.PathLike, *, norm_scale: float | None = None, out_dim: int | None = None
) -> TrainedModel:
    """Rebuild a trained model from its folder: a run (``densescale train --out``) or a study cell
    (``<study>/cells/<dirname>``). Everything comes from the folder (``model.json``; for a cell
    written before cells carried one, ``cell.json`` and its study); the weights' shapes must
    match the recorded config.

    ``norm_scale`` / ``out_dim``, when given, are checked, not applied: a value that contradicts
    the saved config raises ValueError naming both values (scoring a ``norm_scale = 20`` model
    by raw dot products would silently change every CE). Raises ValueError naming ``path`` when
    the folder is neither a run nor a cell."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"path must be a trained run or study cell folder, got {str(folder)!r}")
    if (folder / CELL_CONFIG).is_file():  # a cell holds model.json too, and its study's record
        tm = _load_cell(folder)
    elif (folder / RUN_META).is_file():
        tm = _load_run(folder)
    else:
        tm = None
    if tm is not None:
        saved_in = RUN_META if (folder / RUN_META).is_file() else CELL_CONFIG
        _agree(folder, "norm_scale", tm.norm_scale, norm_scale, "norm_scale argument", saved_in)
        _agree(folder, "out_dim", tm.model.config.out_dim, out_dim, "out_dim argument", saved_in)
        return tm
    if (folder / RESULTS).is_file():
        cells = sorted(p.name for p in (folder / "cells").glob("*") if (p / WEIGHTS).is_file())
        example = f" (e.g. {str(folder / 'cells' / cells[0])!r})" if cells else ""
        raise ValueError(
            f"{str(folder)!r} is a study folder, not one model: name one of its cells, "
            f"{folder / 'cells'!s}/<cell>{example}; `densescale export` also picks cells "
            "with --key or --best-per-size"
        )
    raise ValueError(
        f"{str(folder)!r} is not a trained model: a run folder holds {RUN_META} and {WEIGHTS} "
        f"(`densescale train --out`), a study cell {CELL_CONFIG} and {WEIGHTS}"
    )


def select_cells(
    study: str | os.PathLike, *, key: str | None = None, best_per_size: bool = False
) -> list[tuple[Path, dict]]:
    """Cells of a study folder as ``(cell folder, record)``: the one of ``key``, or with
    ``best_per_size`` the cell of each model with the lowest *dev* CE (over every D, source and
    seed; the test split never chooses a model: a record without a dev CE falls back to its test
    CE; converged cells win over the rest, and cells near chance never win). Largest model
    first."""
    study = Path(study)
    records = _study_records(study)
    if not records:
        raise ValueError(f"study {str(study)!r} has no {RESULTS} (run `densescale study` first)")
    if (key is None) == (not best_per_size):
        raise ValueError("give exactly one of key or best_per_size")
    if key is not None:
        chosen = [r for r in records if r.get("key") == key]
        if not chosen:
            keys = ", ".join(sorted({str(r.get("key")) for r in records})[:8])
            raise ValueError(f"key {key!r} is not in {str(study / RESULTS)!r}; it has {keys}...")
        chosen = chosen[-1:]
    else:

        def rank(r: dict) -> tuple[bool, float]:
            dev = (r.get("train") or {}).get("best_dev_ce")
            return (r.get("converged") is False, dev if dev is not None else r["ce"])

        best: dict[str, dict] = {}
        for r in records:
            if r.get("near_chance") or not math.isfinite(r.get("ce", math.nan)):
                continue
            m = r.get("model")
            if m not in best or rank(r) < rank(best[m]):
                best[m] = r
        chosen = sorted(best.values(), key=lambda r: -(r.get("N") or 0))
    from densescale.models import resolve_model

    out = []
    for r in chosen:
        dim = "" if r.get("d", 768) == 768 else f"_d{r['d']}"
        dirname = f"{resolve_model(r['model']).slug}{dim}_D{r['D']}_{r['source']}_s{r['seed']}"
        cell = study / "cells" / dirname
        if not (cell / WEIGHTS).is_file():
            raise ValueError(f"cell {r['key']!r} has no {WEIGHTS} in {str(cell)!r}")
        out.append((cell, r))
    return out


def load_cell(cell: str | os.PathLike, record: dict | None = None) -> TrainedModel:
    """:func:`load_trained` for a cell whose record is already in hand (from :func:`select_cells`)."""
    return _load_cell(Path(cell), record)


# ---------------------------------------------------------------- writing
def write_model_json(
    folder: str | os.PathLike,
    model: DenseEncoder,
    tokenizer,
    *,
    name: str,
    checkpoint: str | None,
    query_max_length: int,
    passage_max_length: int,
    **info,
) -> Path:
    """Write ``<folder>/model.json`` and a copy of the tokenizer in ``<folder>/tokenizer`` (unless
    it is already there), so the folder loads with nothing else (:func:`load_trained`).

    model.json holds ``model`` (ladder size or checkpoint), ``checkpoint``, ``N`` (SPEC 1.2),
    ``encoder`` (the full :class:`DenseEncoderConfig`, ``out_dim`` and ``norm_scale`` included),
    ``scoring`` (``similarity``: "dot" or "scaled_cosine", ``norm_scale``, ``out_dim``),
    ``tokenizer`` (its folder, relative to ``folder``), the query / passage token lengths and
    ``info`` (D, source, seed, converged, config...). Written atomically; returns its path."""
    from dataclasses import asdict

    from densescale.data.trec import atomic_write_text

    folder = Path(folder)
    tok_dir = folder / TOKENIZER_DIR
    if not (tok_dir / "tokenizer.json").is_file():
        tokenizer.save_pretrained(str(tok_dir))
    cfg = model.config
    meta = {
        "model": name,
        "checkpoint": checkpoint,
        "N": num_non_embedding_params(model),
        "encoder": asdict(cfg),
        "scoring": {
            "similarity": "scaled_cosine" if cfg.norm_scale > 0 else "dot",
            "norm_scale": cfg.norm_scale,
            "out_dim": cfg.out_dim,
        },
        "vocab_size": cfg.vocab_size,
        "tokenizer": TOKENIZER_DIR,
        "query_max_length": int(query_max_length),
        "passage_max_length": int(passage_max_length),
        **info,
    }
    return atomic_write_text(folder / RUN_META, json.dumps(meta, indent=2) + "\n")
