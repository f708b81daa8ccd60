"""The encoder size ladder: the 24 BERT miniatures plus smaller shapes for CPU runs (SPEC 1.2).

A shape is (layers L, hidden H, heads, FFN width). The miniatures use heads = H / 64 and FFN = 4H,
as Google's BERT miniatures do. Non-embedding parameters (encoder blocks + pooler + projection to
``out_dim``) follow::

    N = L * (12 H^2 + 13 H) + (H^2 + H) + (out_dim * H + out_dim)

(per block: Q, K, V, output projections 4(H^2 + H), two LayerNorms 4H, FFN 8H^2 + 5H).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderSize:
    """One transformer shape: ``layers`` blocks of width ``hidden``, ``heads`` heads, FFN ``intermediate``."""

    layers: int
    hidden: int
    heads: int
    intermediate: int

    @property
    def name(self) -> str:
        return f"L{self.layers}-H{self.hidden}"

    def non_embedding_params(self, out_dim: int = 768) -> int:
        """N of SPEC 1.2 for this shape (exact when ``intermediate == 4 * hidden``)."""
        L, H, F = self.layers, self.hidden, self.intermediate
        # Per block: attention 4(H^2 + H) + 2 LayerNorms 4H + FFN (H F + F) + (F H + H).
        block = 4 * (H * H + H) + 4 * H + (H * F + F) + (F * H + H)
        return L * block + (H * H + H) + (out_dim * H + out_dim)


def non_embedding_params_formula(layers: int, hidden: int, out_dim: int = 768) -> int:
    """``N = L (12 H^2 + 13 H) + (H^2 + H) + (out_dim H + out_dim)`` (SPEC 1.2, FFN = 4H)."""
    L, H = layers, hidden
    return L * (12 * H * H + 13 * H) + (H * H + H) + (out_dim * H + out_dim)


def _miniature(layers: int, hidden: int) -> EncoderSize:
    return EncoderSize(layers, hidden, hidden // 64, 4 * hidden)


def _cpu_shape(layers: int, hidden: int) -> EncoderSize:
    # Below H = 128 a 64-wide head would leave one head or none; two narrower heads keep
    # multi-head attention while staying cheap on a CPU.
    return EncoderSize(layers, hidden, 2, 4 * hidden)


#: Every named shape: "L{L}-H{H}" for the 24 miniatures (L in 2..12 step 2, H in 128/256/512/768)
#: and the CPU shapes (L in 1..4, H in 8/12/16/24/32/48/64/96).
SIZES: dict[str, EncoderSize] = {}
for _L in (2, 4, 6, 8, 10, 12):
    for _H in (128, 256, 512, 768):
        SIZES[f"L{_L}-H{_H}"] = _miniature(_L, _H)
for _L in (1, 2, 3, 4):
    for _H in (8, 12, 16, 24, 32, 48, 64, 96):
        SIZES[f"L{_L}-H{_H}"] = _cpu_shape(_L, _H)

#: The five BERT models the paper names.
ALIASES: dict[str, str] = {
    "tiny": "L2-H128",
    "mini": "L4-H256",
    "small": "L4-H512",
    "medium": "L8-H512",
    "base": "L12-H768",
}

#: The 24 miniatures in increasing N: the paper's model-size ladder.
MINIATURES: tuple[str, ...] = tuple(
    sorted(
        (n for n, s in SIZES.items() if s.hidden >= 128),
        key=lambda n: SIZES[n].non_embedding_params(),
    )
)

_SHAPE_RE = re.compile(r"^L(\d+)-H(\d+)$")


def resolve_size(size: str | EncoderSize) -> EncoderSize:
    """Turn a name ("base", "L4-H256", "L1-H32") or an :class:`EncoderSize` into a shape.

    Names not in :data:`SIZES` but of the form ``L{L}-H{H}`` with H a multiple of 64 are accepted
    with heads H/64 and FFN 4H.
    """
    if isinstance(size, EncoderSize):
        shape = size
    elif isinstance(size, str):
        key = ALIASES.get(size.lower(), size)
        if key in SIZES:
            return SIZES[key]
        match = _SHAPE_RE.match(key)
        if match is None or int(match.group(2)) % 64 != 0:
            known = ", ".join(list(ALIASES) + list(SIZES))
            raise ValueError(
                f"size must be an alias, a ladder name or 'L<layers>-H<hidden>' with "
                f"hidden a multiple of 64 (other widths: the CPU shapes listed); known: {known}; "
                f"got {size!r}"
            )
        shape = _miniature(int(match.group(1)), int(match.group(2)))
    else:
        raise TypeError(f"size must be a str or EncoderSize, got {type(size).__name__}")
    if shape.layers < 1 or shape.hidden < 1 or shape.heads < 1 or shape.intermediate < 1:
        raise ValueError(
            f"size must have positive layers, hidden, heads and intermediate, got {shape}"
        )
    if shape.hidden % shape.heads != 0:
        raise ValueError(
            f"size.hidden ({shape.hidden}) must be divisible by size.heads ({shape.heads})"
        )
    return shape
