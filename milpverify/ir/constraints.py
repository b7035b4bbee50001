"""Linear constraints on a network's outputs (A y <= b), shared by VNN-LIB specs and the encodings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """One conjunction of linear output constraints, ``A @ y <= b`` (one row per atom).

    Attributes
    ----------
    A : np.ndarray
        ``(k, n_outputs)`` float64. ``k = 0`` means the constraint holds for every ``y``.
    b : np.ndarray
        ``(k,)`` float64.
    """

    A: np.ndarray
    b: np.ndarray
