"""Argument checks for the scaling package (numpy only: ``densescale._validation`` imports torch).

Every check names the argument, says what was expected and what came, and runs before any work.
"""

from __future__ import annotations

import numbers

import numpy as np


def _float_array(name: str, value: object, expected: str) -> np.ndarray:
    """``value`` as float64, or a TypeError naming ``name``, ``expected`` and the type that came."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}") from exc


def positive_array(name: str, value: object, *, ndim: int = 1) -> np.ndarray:
    """Return ``value`` as a float64 array of ``ndim`` dimensions with finite, positive entries."""
    arr = _float_array(name, value, "a sequence of positive numbers")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be finite, got NaN or Inf at index {_first(~np.isfinite(arr))}"
        )
    if np.any(arr <= 0):
        bad = _first(arr <= 0)
        raise ValueError(
            f"{name} must be > 0 everywhere, got {float(arr.flat[bad])!r} at index {bad}"
        )
    return arr


def positive_values(name: str, value: object) -> np.ndarray:
    """Like :func:`positive_array` but any shape, scalars included (for ``predict`` inputs)."""
    arr = _float_array(name, value, "a positive number or array")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got NaN or Inf")
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got min {float(arr.min())!r}")
    return arr


def same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"inputs must have the same length, got: {listed}")
    return next(iter(lengths.values()))


def positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {expected}, got {value!r}")
    return v


def nonneg_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(np.ravel(mask))[0])


def coverage(name: str, value: object) -> float:
    """A coverage level such as ``ci_level``: a real number in (0, 1)."""
    v = positive_number(name, value)
    if not v < 1:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return v
