"""densescale.data: collections, readers, annotation sources and the synthetic default collection.

- ``Texts``: memory-lean (id, text) sequence in one byte buffer + offsets.
- ``Collection``, ``load_beir``, ``load_msmarco``, ``load_medquad``.
- TREC files: ``read_qrels``, ``write_qrels``, ``read_trec_run``, ``write_trec_run``.
- ``annotation_pairs`` (human / human-noise<f> / ict / crop / doc2query / llm) -> ``TrainingPairs``
  of ``TrainingPair``; ``parse_source`` checks a source string.
- ``generate``: query generators (seq2seq docT5query, causal LM) for the generated sources.
- ``nested_subsets`` for data-size sweeps.
- ``positive_overlap``: the share of a split's positives that are training positives.
- ``synthetic`` (seeded BEIR folder with a known generative model and oracle CE),
  ``generate_synthetic``, ``load_synthetic``, ``read_oracle``.
"""

from __future__ import annotations

from .annotations import (
    GENERATOR_SOURCES,
    SOURCES,
    TrainingPair,
    TrainingPairs,
    annotation_pairs,
    parse_source,
)
from .collection import Collection, load_beir, load_msmarco
from .irds import load_irds
from .medquad import load_medquad
from .overlap import PositiveOverlap, grade_counts, positive_overlap
from .readers import read_jsonl_texts, read_tsv_texts
from .resolve import collection_table, open_collection
from .splits import carve_dev_split
from .subsets import nested_subsets
from .synthetic import (
    SyntheticConfig,
    SyntheticData,
    generate_synthetic,
    load_synthetic,
    protocol_contrastive_entropy,
    read_oracle,
    synthetic,
)
from .texts import Texts, TextsBuilder
from .trec import read_qrels, read_trec_run, write_qrels, write_trec_run

__all__ = [
    "GENERATOR_SOURCES",
    "SOURCES",
    "Collection",
    "PositiveOverlap",
    "SyntheticConfig",
    "SyntheticData",
    "Texts",
    "TextsBuilder",
    "TrainingPair",
    "TrainingPairs",
    "annotation_pairs",
    "carve_dev_split",
    "collection_table",
    "generate_synthetic",
    "grade_counts",
    "load_beir",
    "load_irds",
    "load_medquad",
    "load_msmarco",
    "load_synthetic",
    "nested_subsets",
    "open_collection",
    "parse_source",
    "positive_overlap",
    "protocol_contrastive_entropy",
    "read_jsonl_texts",
    "read_oracle",
    "read_qrels",
    "read_trec_run",
    "read_tsv_texts",
    "synthetic",
    "write_qrels",
    "write_trec_run",
]
