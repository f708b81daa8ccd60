"""A disk cache of generated pseudo-queries (sources ``doc2query`` and ``llm``): generated once per
(generator, prompt, generation options, seed, passages) and read back by every later call, e.g.
every cell of a study, instead of running the generator again.

The key is a SHA-256 of:

- the source kind and the generator folder's fingerprint: its resolved path and the name, size
  and modification time of every file in it (a retrained or replaced model gets a new key;
  hashing the weights themselves would cost as much as reading them);
- the prompt template and every generation option that changes the output (queries per
  passage, input and output lengths, batch size, which sets the sampling order, and
  ``generate_kwargs``), and the seed;
- the passages generated for, in order (their texts): the collection fingerprint of what was
  generated, so another collection, split or subset never reads these queries.

Each entry is ``<key>.json`` (the key's parts, for a reader) and ``<key>.jsonl`` (one JSON list of
queries per passage, in order), both written atomically; an entry whose line count does not
match is ignored and rewritten. The cache folder is ``cache_dir`` when given, else
``$DENSESCALE_QUERY_CACHE``, else ``~/.cache/densescale/queries`` (``$XDG_CACHE_HOME`` respected);
``cache_dir=False`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .trec import atomic_write_text

ENV_VAR = "DENSESCALE_QUERY_CACHE"


def default_cache_dir() -> Path:
    """``$DENSESCALE_QUERY_CACHE``, else ``$XDG_CACHE_HOME/densescale/queries`` (default
    ``~/.cache``)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "densescale" / "queries"


def resolve_cache_dir(cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """The folder to use: None/True -> :func:`default_cache_dir`, False -> None (no cache).

    Raises:
        TypeError: ``cache_dir`` is not a path, None or a bool.
    """
    if cache_dir is None or cache_dir is True:
        return default_cache_dir()
    if cache_dir is False:
        return None
    if not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(
            f"cache_dir must be a folder path, None (the default cache) or False (no cache), "
            f"got {type(cache_dir).__name__}"
        )
    return Path(cache_dir)


def generator_fingerprint(model_path: str | os.PathLike) -> dict:
    """The resolved folder and (name, size, mtime in ns) of each file directly in it."""
    path = Path(model_path).resolve()
    files = []
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                st = f.stat()
                files.append([f.name, st.st_size, st.st_mtime_ns])
    return {"path": str(path), "files": files}


def _canonical(value: Any) -> Any:
    """``value`` as JSON can hold it: dict keys as strings (``repr`` unless a str, e.g. the
    token tuples of ``sequence_bias``), tuples as lists, anything else unknown as its ``repr``."""
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else repr(k)): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def cache_key(
    kind: str,
    model_path: str | os.PathLike,
    options: Mapping[str, Any],
    passages: Sequence[str],
) -> tuple[str, dict]:
    """(hex key, its parts as JSON): see the module docstring for what enters it."""
    digest = hashlib.sha256()
    for text in passages:
        data = str(text).encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # length-prefixed: no ambiguous joins
        digest.update(data)
    parts = {
        "kind": kind,
        "generator": generator_fingerprint(model_path),
        "options": _canonical(dict(options)),
        "passages": {"count": len(passages), "sha256": digest.hexdigest()},
    }
    blob = json.dumps(parts, sort_keys=True, default=repr).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32], parts


def cached_queries(
    kind: str,
    model_path: str | os.PathLike,
    options: Mapping[str, Any],
    passages: Sequence[str],
    generate: Callable[[], list[list[str]]],
    cache_dir: str | os.PathLike | bool | None = None,
) -> list[list[str]]:
    """The queries of ``generate()`` for ``passages``, read from the cache when an entry for the
    same key exists, else generated and stored (one list of queries per passage, in order).

    Args:
        kind: the source ("doc2query" or "llm").
        model_path: the generator folder.
        options: everything else that changes the output (prompt, seed, lengths, kwargs...).
        passages: the passages generated for (their texts enter the key).
        generate: runs the generator; called only on a cache miss.
        cache_dir: see :func:`resolve_cache_dir`.
    """
    folder = resolve_cache_dir(cache_dir)
    if folder is None:
        return generate()
    texts = [str(passages[i]) for i in range(len(passages))]
    key, parts = cache_key(kind, model_path, options, texts)
    entry = folder / f"{key}.jsonl"
    if entry.is_file():
        lines = entry.read_text(encoding="utf-8").splitlines()
        if len(lines) == len(texts):
            return [list(json.loads(line)) for line in lines]
    queries = generate()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        folder / f"{key}.json", json.dumps(parts, indent=1, sort_keys=True, default=repr) + "\n"
    )
    atomic_write_text(entry, "".join(json.dumps(list(q)) + "\n" for q in queries))
    return queries
