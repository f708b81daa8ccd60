"""How much an evaluation split shares with training: the share of its (q, p+) pairs whose positive
passage is also a training positive, and the clean subset without them.

A model trained from scratch can learn "this passage was a training positive" instead of
relevance; on pairs whose positive it was trained towards, its CE and MRR then measure
memorisation. The clean subset (queries none of whose positives is a training positive) measures
generalisation; a large gap between the two is the warning sign.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


@dataclass(frozen=True)
class PositiveOverlap:
    """Overlap of ``split`` with the positives of ``reference`` (both at ``relevance_level``).

    ``pairs``: (q, p+) pairs of the split; ``overlapping``: those whose p+ is a reference positive;
    ``clean_queries``: query ids none of whose positives is a reference positive (sorted)."""

    split: str
    reference: str
    relevance_level: int
    pairs: int
    overlapping: int
    queries: int
    clean_queries: tuple[str, ...]

    @property
    def share(self) -> float:
        """Fraction of the split's pairs whose positive is a reference positive, in [0, 1]."""
        return self.overlapping / self.pairs if self.pairs else 0.0

    def to_dict(self) -> dict:
        return {
            "split": self.split,
            "reference": self.reference,
            "relevance_level": self.relevance_level,
            "pairs": self.pairs,
            "overlapping_pairs": self.overlapping,
            "share": round(self.share, 6),
            "queries": self.queries,
            "clean_queries": len(self.clean_queries),
        }


def positive_overlap(
    collection,
    split: str,
    *,
    reference: str = "train",
    relevance_level: int = 1,
    queries: Collection[str] | None = None,
) -> PositiveOverlap:
    """The overlap of ``split``'s positives with ``reference``'s (see the module docstring).

    A positive is a judgement with grade >= ``relevance_level``; ``queries`` restricts the split
    to those query ids (an evaluation that samples queries). Raises ``ValueError`` naming the
    split for an unknown split or a ``relevance_level`` < 1."""
    if not isinstance(relevance_level, int) or isinstance(relevance_level, bool):
        raise TypeError(f"relevance_level must be an int >= 1, got {relevance_level!r}")
    if relevance_level < 1:
        raise ValueError(f"relevance_level must be an int >= 1, got {relevance_level!r}")
    seen = {
        d
        for docs in collection.qrels(reference).values()
        for d, r in docs.items()
        if r >= relevance_level
    }
    pairs = overlapping = 0
    clean: list[str] = []
    qrels = collection.qrels(split)
    if queries is not None:
        keep = set(queries)
        qrels = {q: docs for q, docs in qrels.items() if q in keep}
    for qid, docs in qrels.items():
        positives = [d for d, r in docs.items() if r >= relevance_level]
        hits = sum(d in seen for d in positives)
        pairs += len(positives)
        overlapping += hits
        if positives and not hits:
            clean.append(qid)
    return PositiveOverlap(
        split, reference, relevance_level, pairs, overlapping, len(qrels), tuple(sorted(clean))
    )


def grade_counts(collection, split: str) -> dict[int, int]:
    """``{grade: number of judgements}`` of ``split``, sorted by grade (graded qrels show here)."""
    counts: dict[int, int] = {}
    for docs in collection.qrels(split).values():
        for r in docs.values():
            counts[int(r)] = counts.get(int(r), 0) + 1
    return dict(sorted(counts.items()))
