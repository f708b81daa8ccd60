"""The study's pretraining cache: one pretrained encoder body per ladder size, seed and pretrain
config (with the tokenizer and the collection it was pretrained on), shared by every cell that
needs it (issue 18).

An entry lives in ``<study>/cache/pretrain/<size>_s<seed>_<key>/`` (see
:func:`densescale.train.pretrain.pretrain` for its files). Two pool workers that want the same
entry at once are serialised by a file lock next to it: the first pretrains, the second waits and
then reads the finished entry. An interrupted pretraining resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from densescale.study.config import Cell, StudyConfig

# seconds a worker waits for another worker's pretraining of the same entry before giving up
LOCK_TIMEOUT = 6 * 3600


def pretrain_config(study: StudyConfig, cell: Cell):
    """The cell's resolved PretrainConfig: the study's, with the cell's seed and, with
    ``train.lr_reference_width`` set, its learning rate scaled by reference / hidden width as
    fine-tuning's is (:meth:`StudyConfig.lr_for`). None when the study has no ``[pretrain]``
    table or the cell's model is a checkpoint (already pretrained)."""
    from densescale.models import resolve_model

    spec = resolve_model(cell.model)
    if study.pretrain is None or spec.pretrained:
        return None
    lr = study.pretrain.lr
    if study.lr_reference_width:
        lr = lr * study.lr_reference_width / spec.size.hidden
    return dataclasses.replace(study.pretrain, seed=cell.seed, lr=lr)


def pretrain_key(study: StudyConfig, cell: Cell, fingerprint: str) -> tuple[dict, str] | None:
    """What a cached pretraining depends on (size, seed, resolved config, tokenizer settings,
    collection fingerprint) and its 16-hex-digit hash; None when the cell is not pretrained.
    Neither the data size, the source nor the embedding dimension enters it: every cell of one
    size and seed shares the entry."""
    from densescale.models import resolve_model

    cfg = pretrain_config(study, cell)
    if cfg is None:
        return None
    key = {
        "size": resolve_model(cell.model).size.name,
        "seed": cell.seed,
        "pretrain": cfg.to_dict(),
        "tokenizer": study.tokenizer_settings,
        "collection": fingerprint,
    }
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def entry_dir(study: StudyConfig, cell: Cell, digest: str) -> Path:
    from densescale.models import resolve_model

    name = f"{resolve_model(cell.model).size.name}_s{cell.seed}_{digest}"
    return study.paths()["cache"] / "pretrain" / name


def pretrained_body(study: StudyConfig, cell: Cell, model, inputs: dict, *, progress=False):
    """Load the cell's cached pretrained body into ``model.bert`` (a freshly built
    :class:`~densescale.models.DenseEncoder` of the cell's size), pretraining it first when no
    worker has; return what the record keeps: ``key``, ``path``, ``objectives``, ``steps``,
    ``tokens``, ``flops``, ``seconds`` (the pretraining's own, whichever cell ran it) and
    ``reused`` (False for the cell that pretrained it). None when the cell is not pretrained.

    ``inputs`` is :func:`densescale.study.prepare.cell_inputs`'s dict (fingerprint, tokenizer,
    corpus)."""
    from filelock import FileLock

    from densescale.train.pretrain import RESULT, pretrain

    keyed = pretrain_key(study, cell, inputs["fingerprint"])
    if keyed is None:
        return None
    key, digest = keyed
    folder = entry_dir(study, cell, digest)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=LOCK_TIMEOUT):
        reused = (folder / RESULT).is_file()
        if not reused:
            from densescale.data.trec import atomic_write_text

            folder.mkdir(exist_ok=True)
            atomic_write_text(folder / "key.json", json.dumps(key, indent=2, sort_keys=True) + "\n")
            if progress:
                print(f"  pretraining {key['size']} seed {cell.seed} ({digest})", flush=True)
        result = pretrain(
            model,
            inputs["tokenizer"],
            inputs["corpus"],
            folder,
            pretrain_config(study, cell),
            device="cuda" if _cuda() else "cpu",
        )
    return {
        "key": digest,
        "path": str(folder),
        "objectives": list(key["pretrain"]["objectives"]),
        "steps": result.steps,
        "tokens": result.tokens,
        "flops": result.flops,
        "seconds": result.seconds,
        "heldout_loss": result.heldout_loss,
        "reused": reused,
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pretrain_flops_estimate(study: StudyConfig) -> float:
    """FLOPs of the study's pretraining, once per distinct (ladder size, seed): ``6 N tokens`` with
    ``tokens = steps x batch_size x max_length`` per objective, twice for a contrastive one (two
    views); the MLM head is left out (an estimate, as the rest of the cost model). 0 without
    ``[pretrain]``."""
    from densescale.models import resolve_model

    cfg = study.pretrain
    if cfg is None:
        return 0.0
    views = sum(1 if o == "mlm" else 2 for o in cfg.objectives)
    tokens = cfg.steps * cfg.batch_size * cfg.max_length * views
    done, total = set(), 0.0
    for cell in study.cells():
        spec = resolve_model(cell.model)
        if spec.pretrained or (spec.size, cell.seed) in done:
            continue
        done.add((spec.size, cell.seed))
        total += 6.0 * spec.size.non_embedding_params(0) * tokens
    return total
