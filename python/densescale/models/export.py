"""Trained densescale models as standard sentence-transformers folders.

:func:`export_sentence_transformers` writes a :class:`~densescale.models.trained.TrainedModel`
(:func:`~densescale.models.trained.load_trained`) as a folder that ``SentenceTransformer(folder)``
loads with no custom code (sentence-transformers 5 and 6)::

    modules.json                  0: Transformer (the BERT and its tokenizer, at the root)
    1_Pooling/                    1: Pooling (mean over non-padding tokens)
    2_Dense/                      2: Dense (the projection W h + b, identity activation)
    3_Normalize/, 4_Dense/        3, 4: only with norm_scale = s > 0: e / |e|, then sqrt(s) * I
    README.md                     the model card: collection, N, D, source, recipe, CE, metrics

so ``encode`` returns densescale's embeddings ``e(x)`` and the similarity is the dot product,
which is ``s * cos(q, p)`` for a ``norm_scale`` model, exactly as densescale scores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .trained import TrainedModel


def _fmt(x, spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def model_card(tm: TrainedModel) -> str:
    """The model card (README.md) of an exported model."""
    info, rec = tm.info, tm.record or {}
    s = tm.norm_scale
    score = (
        f"{s:g} x cosine: embeddings are sqrt({s:g}) e/‖e‖, so their dot product is {s:g} cos(q, p)"
        if s > 0
        else "dot product of the raw embeddings (the paper's model)"
    )
    origin = (
        f"fine-tuned from `{tm.checkpoint}` with a new projection"
        if tm.checkpoint
        else f"ladder size {tm.name}, random initialisation, its own WordPiece tokenizer"
    )
    train = info.get("train") or {}
    recipe_keys = (
        "protocol",
        "batch_size",
        "num_negatives",
        "scale",
        "lr",
        "schedule",
        "warmup_steps",
        "max_steps",
        "patience",
        "plateau_decays",
        "negatives_from",
        "steps",
        "best_step",
        "best_dev_ce",
        "stop_reason",
    )
    # with norm_scale the score is norm_scale x cosine and train.scale is not used: leave it out
    shown = [k for k in recipe_keys if train.get(k) is not None and not (k == "scale" and s > 0)]
    recipe = ", ".join(f"{k} = {train[k]}" for k in shown)
    if s > 0:
        recipe += f", score = {s:g} x cosine (norm_scale)"
    collection = info.get("collection") or {}
    col_text = (
        (
            info.get("study")
            and f"study `{info['study']}` (collection fingerprint {collection.get('fingerprint', '?')})"
        )
        or (collection.get("path") if isinstance(collection, dict) else str(collection))
        or "n/a"
    )
    study_json = tm.path.parent.parent / "study.json"
    if tm.kind == "cell" and study_json.is_file():  # name the collection, not only its hash
        table = json.loads(study_json.read_text()).get("collection") or {}
        where = table.get("path") or table.get("id")
        if where:
            col_text += f": {table.get('kind', '')} `{where}`"
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, densescale, dense-retrieval]",
        "---",
        "",
        f"# densescale {tm.name} (N = {tm.N:,})",
        "",
        f"A dual encoder trained by densescale ({tm.kind} `{tm.path.name}`): {origin}; mean "
        f"pooling, a {tm.model.config.out_dim}-d projection with bias"
        + (", normalised and scaled" if s > 0 else "")
        + ".",
        "",
        "| | |",
        "|---|---|",
        f"| collection | {col_text} |",
        f"| N (non-embedding parameters) | {tm.N:,} |",
        f"| D (training pairs) | {_fmt(info.get('D'), ',')} |",
        f"| annotation source | {info.get('source') or 'n/a'} |",
        f"| seed | {info.get('seed') if info.get('seed') is not None else 'n/a'} |",
        f"| study key | {info.get('key') or 'n/a'} |",
        f"| score | {score} |",
        (
            f"| lengths | queries {tm.query_max_length} tokens, passages "
            f"{tm.passage_max_length} (sentence-transformers truncates every text at "
            f"max_seq_length = {tm.passage_max_length}) |"
        ),
        f"| converged | {_converged_text(info)} |",
        f"| training recipe | {recipe or 'n/a'} |",
        "",
        "## Evaluation",
        "",
    ]
    if rec:
        chance = rec.get("chance_ce")
        lines.append(
            f"Split `{rec.get('split', '?')}`: contrastive entropy {_fmt(rec.get('ce'))} "
            f"(+/- {_fmt(rec.get('ce_stderr'))}; chance ln(K+1) = {_fmt(chance, '.3f')}, "
            f"K = {rec.get('num_negatives', '?')} random negatives), over "
            f"{_count(rec.get('num_queries'))} queries and {_count(rec.get('num_passages'))} "
            "passages searched (the metrics depend on this scope)."
        )
        lines += ["", "| metric | this model | random ranking | BM25 |", "|---|---|---|---|"]
        metrics = rec.get("metrics") or {}
        mchance = rec.get("metrics_chance") or {}
        bm = (tm.bm25 or {}).get("metrics") or rec.get("bm25") or {}
        for name in ("mrr@10", "ndcg@10", "recall@100", "map"):
            if name in metrics:
                lines.append(
                    f"| {name} | {_fmt(metrics[name])} | {_fmt(mchance.get(name))} | "
                    f"{_fmt(bm.get(name))} |"
                )
        if not bm:
            lines += ["", "No BM25 row was recorded for this split."]
    else:
        lines.append("Not evaluated (run `densescale eval` on the run folder first).")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        'model = SentenceTransformer("path/to/this/folder")',
        'q = model.encode_query(["what causes glaucoma?"])',
        'p = model.encode_document(["Glaucoma is a group of eye diseases..."])',
        "print(model.similarity(q, p))  # dot product" + (f" = {s:g} x cosine" if s > 0 else ""),
        "```",
        "",
    ]
    return "\n".join(lines)


def _count(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


def _converged_text(info: dict) -> str:
    c = info.get("converged")
    if c is None:
        return "not recorded"
    conv = info.get("convergence")
    return ("yes" if c else "NO") + (f" ({conv})" if conv and conv != "converged" else "")


def _module(idx: int, path: str, kind: str) -> dict:
    return {
        "idx": idx,
        "name": str(idx),
        "path": path,
        "type": f"sentence_transformers.models.{kind}",
    }


def _write_dense(folder: Path, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    config = {
        "in_features": weight.shape[1],
        "out_features": weight.shape[0],
        "bias": bias is not None,
        "activation_function": "torch.nn.modules.linear.Identity",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = {"linear.weight": weight.detach().float().contiguous().clone()}
    if bias is not None:
        tensors["linear.bias"] = bias.detach().float().contiguous().clone()
    save_file(tensors, str(folder / "model.safetensors"))


def _write_folder(tm: TrainedModel, tmp: Path) -> None:
    import sentence_transformers
    import transformers

    model = tm.model
    cfg = model.config
    model.bert.save_pretrained(str(tmp), safe_serialization=True)
    tm.tokenizer.model_max_length = tm.passage_max_length
    tm.tokenizer.save_pretrained(str(tmp))
    (tmp / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": tm.passage_max_length, "do_lower_case": False}, indent=2)
    )
    (tmp / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "__version__": {
                    "sentence_transformers": sentence_transformers.__version__,
                    "transformers": transformers.__version__,
                    "pytorch": torch.__version__,
                },
                "prompts": {"query": "", "document": ""},
                "default_prompt_name": None,
                "similarity_fn_name": "dot",
            },
            indent=2,
        )
    )
    pooling = tmp / "1_Pooling"
    pooling.mkdir()
    (pooling / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": cfg.hidden,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )
    _write_dense(tmp / "2_Dense", model.proj.weight, model.proj.bias)
    modules = [
        _module(0, "", "Transformer"),
        _module(1, "1_Pooling", "Pooling"),
        _module(2, "2_Dense", "Dense"),
    ]
    if cfg.norm_scale > 0:
        # e / |e| then sqrt(s) * I: x * sqrt(s) plus exact zeros, the same floats densescale gives
        (tmp / "3_Normalize").mkdir()
        scale = torch.eye(cfg.out_dim) * math.sqrt(cfg.norm_scale)
        _write_dense(tmp / "4_Dense", scale, None)
        modules += [_module(3, "3_Normalize", "Normalize"), _module(4, "4_Dense", "Dense")]
    (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
    (tmp / "README.md").write_text(model_card(tm))
    (tmp / "densescale.json").write_text(
        json.dumps(
            {
                "name": tm.name,
                "checkpoint": tm.checkpoint,
                "N": tm.N,
                "encoder": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                "query_max_length": tm.query_max_length,
                "passage_max_length": tm.passage_max_length,
                "info": tm.info,
                "record": tm.record,
            },
            indent=2,
            default=str,
        )
    )


def export_sentence_transformers(
    tm: TrainedModel, out: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``tm`` as a sentence-transformers folder at ``out`` (layout in the module docstring).

    Atomic: everything is written into a temporary folder beside ``out`` and renamed into place,
    so ``out`` never holds half a model. A non-empty ``out`` is refused unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder path, got the file {str(out)!r}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"out {str(out)!r} exists and is not empty; pass --overwrite (overwrite=True) to "
            "replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_folder(tm, tmp)
        if out.is_dir():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
