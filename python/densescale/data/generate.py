"""Query generators for the generated annotation sources: pseudo-queries from a local model folder.

- ``generate_queries_seq2seq`` (source ``"doc2query"``, docT5query: Nogueira & Lin 2019, "From
  doc2query to docTTTTTquery"): ``transformers`` ``AutoModelForSeq2SeqLM`` + tokenizer; the passage
  (truncated to ``max_input_length`` tokens) is the encoder input, and top-k sampling with k = 10
  writes the query, as docTTTTTquery did.
- ``generate_queries_causal`` (source ``"llm"``): any decoder-only ``AutoModelForCausalLM`` +
  tokenizer. The prompt is ``prompt_template`` with ``{passage}`` replaced by the passage
  (truncated to ``max_input_length`` tokens; other braces are kept as written); prompts are
  batched with left padding; greedy decoding unless ``generate_kwargs`` asks for sampling
  (``{"do_sample": True, ...}``, seeded). The continuation, with leading whitespace removed, is
  cut at its first newline and its whitespace collapsed.

Both take the folder a user names (``model_path``, loaded with ``local_files_only=True``: nothing
is downloaded), return one list of queries per passage (empty queries are dropped), seed torch's
generator with ``seed`` inside a forked RNG state (the caller's state is untouched), process
passages longest first (less padding; the same passages, seed and batch size give the same
queries) and show a progress bar for long work. They do not cache: ``annotation_pairs`` caches
their output on disk (:mod:`densescale.data.query_cache`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_LLM_PROMPT = (
    "Write a short search query that the following passage answers.\n\nPassage: {passage}\n\nQuery:"
)
_AUTO_PROGRESS = 1000  # progress=None shows a bar from this many passages on
_CAUSAL_ARCHS = ("ForCausalLM", "LMHeadModel")


def clean_generated(text: str) -> str:
    """A generated continuation as a query: leading whitespace removed, cut at the first newline,
    whitespace runs collapsed to one space."""
    return " ".join(text.lstrip().split("\n", 1)[0].split())


def _load(model_path: str | Path, source: str):
    """The tokenizer of a generator folder, after checking its config; errors name the folder."""
    from transformers import AutoConfig, AutoTokenizer

    what = (
        "seq2seq (AutoModelForSeq2SeqLM, e.g. docT5query)"
        if source == "doc2query"
        else "causal LM (AutoModelForCausalLM)"
    )
    path = Path(model_path)
    if not path.is_dir():
        raise ValueError(
            f"model_path for source {source!r} must be a local folder with a {what} model and its "
            f"tokenizer, got {str(model_path)!r}: no such folder"
        )
    if not (path / "config.json").is_file():
        raise ValueError(
            f"model_path {str(model_path)!r} for source {source!r} has no config.json: it is not a "
            f"Hugging Face model folder (expected a {what} model saved with save_pretrained or "
            "downloaded with `hf download <repo> --local-dir <folder>`)"
        )
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    archs = list(getattr(config, "architectures", None) or [])
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    ok = (
        is_seq2seq
        if source == "doc2query"
        else not is_seq2seq and (not archs or any(a.endswith(_CAUSAL_ARCHS) for a in archs))
    )
    if not ok:
        raise ValueError(
            f"model_path {str(model_path)!r} holds a {config.model_type!r} model "
            f"({', '.join(archs) or 'no architectures listed'}), not a {what} generator as "
            f"source {source!r} needs"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(
            f"model_path {str(model_path)!r} for source {source!r} has no usable tokenizer: {e}"
        ) from None
    return tokenizer


def _load_model(auto_class, model_path, source: str, device: str):
    try:
        model = auto_class.from_pretrained(model_path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"model_path {str(model_path)!r} could not be loaded for source {source!r}: {e}"
        ) from None
    return model.to(device).eval()


def _check_common(passages, per_passage: int, batch_size: int, max_new_tokens: int) -> None:
    if not isinstance(passages, Sequence) or isinstance(passages, (str, bytes)):
        raise TypeError(f"passages must be a sequence of str, got {type(passages).__name__}")
    for name, v in (
        ("queries_per_passage", per_passage),
        ("batch_size", batch_size),
        ("max_new_tokens", max_new_tokens),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def _run_batches(
    passages: Sequence[str],
    batch_size: int,
    seed: int,
    device: str,
    progress: bool | None,
    desc: str,
    generate_batch: Callable[[list[str]], list[list[str]]],
) -> list[list[str]]:
    """Generate for ``passages`` longest first in batches; results in the input order."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    n = len(passages)
    texts = [str(p) for p in passages]
    order = np.argsort([-len(t) for t in texts], kind="stable").tolist()
    out: list[list[str]] = [[] for _ in range(n)]
    show = n >= _AUTO_PROGRESS if progress is None else bool(progress)
    dev = torch.device(device)
    fork = [dev.index or 0] if dev.type == "cuda" else []
    with (
        tqdm(total=n, desc=desc, unit="passage", disable=not show) as bar,
        torch.random.fork_rng(devices=fork),
        torch.inference_mode(),
    ):
        torch.manual_seed(seed)
        for b in range(0, n, batch_size):
            chunk = order[b : b + batch_size]
            for i, queries in zip(chunk, generate_batch([texts[i] for i in chunk])):
                out[i] = [q for q in queries if q]
            bar.update(len(chunk))
    return out


def generate_queries_seq2seq(
    passages: Sequence[str],
    model_path: str | Path,
    *,
    seed: int = 0,
    queries_per_passage: int = 1,
    batch_size: int = 32,
    max_input_length: int = 512,
    max_new_tokens: int = 64,
    device: str = "cpu",
    generate_kwargs: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> list[list[str]]:
    """docT5query-style pseudo-queries: for each passage, up to ``queries_per_passage`` queries
    from the local seq2seq model in ``model_path`` (top-k sampling, k = 10, seeded; override
    with ``generate_kwargs``). Returns one list per passage, in order."""
    from transformers import AutoModelForSeq2SeqLM

    _check_common(passages, queries_per_passage, batch_size, max_new_tokens)
    tokenizer = _load(model_path, "doc2query")
    model = _load_model(AutoModelForSeq2SeqLM, model_path, "doc2query", device)
    kwargs = {
        "do_sample": True,
        "top_k": 10,
        "max_new_tokens": max_new_tokens,
        "num_return_sequences": queries_per_passage,
        **(generate_kwargs or {}),
    }

    def batch(texts: list[str]) -> list[list[str]]:
        enc = tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=max_input_length
        ).to(device)
        enc.pop("token_type_ids", None)
        decoded = tokenizer.batch_decode(model.generate(**enc, **kwargs), skip_special_tokens=True)
        k = len(decoded) // len(texts)
        return [
            [" ".join(q.split()) for q in decoded[j * k : (j + 1) * k]] for j in range(len(texts))
        ]

    return _run_batches(passages, batch_size, seed, device, progress, "doc2query", batch)


def generate_queries_causal(
    passages: Sequence[str],
    model_path: str | Path,
    *,
    prompt_template: str = DEFAULT_LLM_PROMPT,
    seed: int = 0,
    queries_per_passage: int = 1,
    batch_size: int = 16,
    max_input_length: int = 512,
    max_new_tokens: int = 32,
    device: str = "cpu",
    generate_kwargs: Mapping[str, Any] | None = None,
    progress: bool | None = None,
) -> list[list[str]]:
    """Queries written by a local causal LM: the prompt is ``prompt_template`` with ``{passage}``
    replaced by the passage (cut to ``max_input_length`` tokens); greedy decoding by default,
    seeded sampling with ``generate_kwargs={"do_sample": True, ...}`` (needed for
    ``queries_per_passage > 1``); each continuation is cut at its first newline
    (``clean_generated``). Returns one list per passage, in order."""
    from transformers import AutoModelForCausalLM

    _check_common(passages, queries_per_passage, batch_size, max_new_tokens)
    if not isinstance(prompt_template, str) or "{passage}" not in prompt_template:
        raise ValueError(
            f"prompt_template must be a str containing '{{passage}}', got {prompt_template!r}"
        )
    kwargs: dict[str, Any] = {
        "do_sample": False,
        "max_new_tokens": max_new_tokens,
        "num_return_sequences": queries_per_passage,
        **(generate_kwargs or {}),
    }
    if queries_per_passage > 1 and not kwargs["do_sample"] and kwargs.get("num_beams", 1) < 2:
        raise ValueError(
            f"queries_per_passage={queries_per_passage} needs sampling (greedy decoding writes one "
            "query per passage): pass generate_kwargs={'do_sample': True, ...}"
        )
    tokenizer = _load(model_path, "llm")
    model = _load_model(AutoModelForCausalLM, model_path, "llm", device)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"model_path {str(model_path)!r}: the tokenizer has neither a pad nor an eos "
                "token, so prompts cannot be batched"
            )
        tokenizer.pad_token = tokenizer.eos_token
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)

    def batch(texts: list[str]) -> list[list[str]]:
        ids = tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=max_input_length
        )["input_ids"]
        cut = [
            tokenizer.decode(i, skip_special_tokens=True) if len(i) >= max_input_length else t
            for i, t in zip(ids, texts)
        ]
        prompts = [prompt_template.replace("{passage}", t) for t in cut]
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        enc.pop("token_type_ids", None)
        out = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1] :]
        decoded = [
            clean_generated(q) for q in tokenizer.batch_decode(out, skip_special_tokens=True)
        ]
        k = len(decoded) // len(texts)
        return [decoded[j * k : (j + 1) * k] for j in range(len(texts))]

    return _run_batches(passages, batch_size, seed, device, progress, "llm queries", batch)
