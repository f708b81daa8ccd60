"""Generated queries are made once per (generator, prompt, options, seed, passages) and read back:
through ``annotation_pairs`` with a tiny local GPT-2, counting the generator's runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_data_annotations import _tiny_gpt2, collection  # noqa: F401 (a fixture)

from densescale.data import annotation_pairs, generate


@pytest.fixture
def counted(monkeypatch):
    """Counts the runs of the causal generator (the real one runs)."""
    runs = []
    real = generate.generate_queries_causal

    def run(*args, **kwargs):
        runs.append(kwargs.get("prompt_template"))
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "generate_queries_causal", run)
    return runs


def test_generated_once_then_read_back(collection, tmp_path: Path, counted):  # noqa: F811
    model = _tiny_gpt2(tmp_path / "gpt2")
    cache = tmp_path / "cache"
    run = {"model_path": str(model), "max_new_tokens": 4, "cache_dir": cache}
    first = annotation_pairs(collection, "llm", **run)
    assert len(counted) == 1 and len(first) > 0
    assert len(list(cache.glob("*.jsonl"))) == 1 and len(list(cache.glob("*.json"))) == 1
    again = annotation_pairs(collection, "llm", **run)
    assert len(counted) == 1 and list(again) == list(first)  # read back, not regenerated
    # a study's other cells: same generator, prompt, seed and passages -> still one run
    annotation_pairs(collection, "llm", progress=False, **run)
    assert len(counted) == 1
    # each part of the key makes a new entry
    annotation_pairs(collection, "llm", prompt_template="Q: {passage} ->", **run)
    annotation_pairs(collection, "llm", seed=1, **run)  # another seed, other subsets/sampling
    annotation_pairs(collection, "llm", max_pairs=2, **run)  # other passages
    annotation_pairs(collection, "llm", **dict(run, max_new_tokens=3))
    assert len(counted) == 5 and len(list(cache.glob("*.jsonl"))) == 5
    # a replaced generator (its files change) is not the cached one
    config = model / "config.json"
    st = config.stat()
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    annotation_pairs(collection, "llm", **run)
    assert len(counted) == 6


def test_a_broken_entry_is_regenerated_and_false_turns_the_cache_off(
    collection,  # noqa: F811
    tmp_path: Path,
    counted,
    monkeypatch,
):
    model = _tiny_gpt2(tmp_path / "gpt2")
    cache = tmp_path / "cache"
    run = {"model_path": str(model), "max_new_tokens": 4}
    first = annotation_pairs(collection, "llm", cache_dir=cache, **run)
    (entry,) = cache.glob("*.jsonl")
    entry.write_text(entry.read_text().splitlines()[0] + "\n")  # one line short
    assert list(annotation_pairs(collection, "llm", cache_dir=cache, **run)) == list(first)
    assert len(counted) == 2 and len(entry.read_text().splitlines()) == len(first)
    default = tmp_path / "default"
    monkeypatch.setenv("DENSESCALE_QUERY_CACHE", str(default))
    annotation_pairs(collection, "llm", cache_dir=False, **run)
    annotation_pairs(collection, "llm", cache_dir=False, **run)
    assert len(counted) == 4 and not default.exists()
    with pytest.raises(TypeError, match="cache_dir must be a folder path"):
        annotation_pairs(collection, "llm", cache_dir=3, **run)


def test_the_default_folder_comes_from_the_environment(
    collection,  # noqa: F811
    tmp_path: Path,
    counted,
    monkeypatch,
):
    monkeypatch.setenv("DENSESCALE_QUERY_CACHE", str(tmp_path / "env"))
    model = _tiny_gpt2(tmp_path / "gpt2")
    annotation_pairs(collection, "llm", model_path=str(model), max_new_tokens=4)
    annotation_pairs(collection, "llm", model_path=str(model), max_new_tokens=4)
    assert len(counted) == 1 and len(list((tmp_path / "env").glob("*.jsonl"))) == 1
