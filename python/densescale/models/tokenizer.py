"""WordPiece tokenizer trained offline on the training corpus (cached), or loaded from a local path.

The result is a ``transformers.PreTrainedTokenizerFast`` (BERT-style: lowercasing normaliser,
``[CLS] text [SEP]``, ``[PAD]`` = id 0), so ``tok(texts, padding=True, truncation=True,
max_length=T, return_tensors="pt")`` gives ``input_ids`` / ``attention_mask`` tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_STAMP = "densescale_tokenizer.json"


def _fingerprint(texts: Iterable[str], settings: dict, cache_key: str | None) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    if cache_key is not None:
        h.update(b"key\0" + cache_key.encode())
        return h.hexdigest()
    count = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must yield str, got {type(text).__name__} at position {i}")
        # length prefix: ("ab", "c") and ("a", "bc") must hash differently
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)
        count += 1
    if count == 0:
        raise ValueError("texts must not be empty")
    return h.hexdigest()


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    out_dir: str | os.PathLike,
    *,
    min_frequency: int = 2,
    lowercase: bool = True,
    cache_key: str | None = None,
    model_max_length: int = 512,
):
    """Train a BERT WordPiece tokenizer of ``vocab_size`` tokens on ``texts`` and save it to
    ``out_dir``; return it loaded (see :func:`load_tokenizer`).

    Cached: when ``out_dir`` already holds a tokenizer built from the same texts and settings it is
    loaded instead of retrained. The texts are identified by a SHA-256 over their content, which
    needs a second pass, so ``texts`` must be re-iterable (a list, a reader object); pass
    ``cache_key`` (e.g. the collection path and its size) to identify them without that pass, and
    then ``texts`` may be a one-shot iterator. The directory is replaced atomically.
    """
    if (
        not isinstance(vocab_size, int)
        or isinstance(vocab_size, bool)
        or vocab_size <= len(SPECIAL_TOKENS)
    ):
        raise ValueError(f"vocab_size must be an int > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive int, got {min_frequency!r}")
    if cache_key is not None and not isinstance(cache_key, str):
        raise TypeError(f"cache_key must be a str or None, got {type(cache_key).__name__}")
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be an iterable of str, got {type(texts).__name__}")
    if cache_key is None and isinstance(texts, Iterator):
        raise TypeError(
            "texts is a one-shot iterator, which cannot be both fingerprinted and trained "
            "on; pass a re-iterable sequence or a cache_key"
        )
    out_dir = Path(out_dir)
    settings = {
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "lowercase": lowercase,
        "model_max_length": model_max_length,
        "algorithm": "wordpiece-bert-v1",
    }
    fingerprint = _fingerprint(texts, settings, cache_key)
    stamp = out_dir / _STAMP
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
                return load_tokenizer(out_dir)
        except (OSError, json.JSONDecodeError):
            pass  # unreadable stamp: rebuild

    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )

    def stream():
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must yield str, got {type(text).__name__} at position {i}")
            yield text

    tok.train_from_iterator(stream(), trainer=trainer)
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise ValueError("texts produced no tokens beyond the special ones; is the corpus empty?")
    # The trainer breaks frequency ties in hash-map order, so token ids differ from run to run;
    # renumber canonically (special tokens first, then sorted) so the same texts always give the
    # same ids and seeded models initialise identically.
    learned = tok.get_vocab()
    ordered = list(SPECIAL_TOKENS) + sorted(t for t in learned if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece(
        {t: i for i, t in enumerate(ordered)}, unk_token="[UNK]", max_input_chars_per_word=100
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fast.save_pretrained(str(tmp))
        (tmp / _STAMP).write_text(json.dumps({"fingerprint": fingerprint, "settings": settings}))
        _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(out_dir)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is swapped out first so it is never half-written."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_tokenizer(path: str | os.PathLike):
    """Load a fast tokenizer from a local directory (one written by :func:`train_tokenizer`, or any
    Hugging Face tokenizer folder such as a BERT checkpoint's)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"path must be an existing tokenizer directory, got {str(path)!r}")
    if (path / "tokenizer.json").is_file():
        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    else:
        tok = AutoTokenizer.from_pretrained(str(path), use_fast=True)
    if tok.pad_token_id is None:
        raise ValueError(
            f"the tokenizer at {str(path)!r} has no padding token; batch encoding needs one"
        )
    return tok
