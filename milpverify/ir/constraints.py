"""Linear constraints on a network's outputs (A y <= b): one type for VNN-LIB disjuncts, the
misclassification disjunction of a robustness query, and the output constraint under which
`compute_bounds` tightens bounds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from milpverify.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """One conjunction of linear output constraints, ``A @ y <= b`` (one row per atom).

    Attributes
    ----------
    A : np.ndarray
        ``(k, n_outputs)`` float64. ``k = 0`` means the constraint holds for every ``y``.
    b : np.ndarray
        ``(k,)`` float64.
    name : str
        What the conjunction stands for (the competing label of a misclassification row,
        the index of a VNN-LIB disjunct); it names the rows of an encoded model.
    """

    A: np.ndarray
    b: np.ndarray
    name: str = ""

    @staticmethod
    def of(value: OutputConstraint | tuple[npt.ArrayLike, npt.ArrayLike], num_outputs: int,
           what: str = "output_constraint") -> OutputConstraint:
        """`value` (an `OutputConstraint` or a pair ``(A, b)``) checked against the network's
        output size, as float64 arrays.

        Raises
        ------
        InvalidInputError
            Not a pair of numeric arrays, wrong shapes, or non-finite entries.
        """
        name = value.name if isinstance(value, OutputConstraint) else ""
        try:
            a_raw, b_raw = (value.A, value.b) if isinstance(value, OutputConstraint) else value
            A = np.array(a_raw, dtype=np.float64, ndmin=2)
            b = np.array(b_raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"`{what}` must be a pair (A, b) of numeric arrays: "
                                    f"{exc}") from exc
        if A.ndim != 2 or A.shape[1] != num_outputs or b.shape != (A.shape[0],):
            raise InvalidInputError(
                f"`{what}` (A, b) needs A of shape (k, {num_outputs}) (the network's outputs) "
                f"and b of shape (k,); got {A.shape} and {b.shape}.")
        if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
            raise InvalidInputError(f"`{what}` has NaN or infinite entries.")
        return OutputConstraint(A, b, name)

    def row_range(self, lower: npt.NDArray[np.float64], upper: npt.NDArray[np.float64]
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Interval ``[min, max]`` of each row of ``A y`` over the box ``lower <= y <= upper``."""
        A = self.A
        lo = np.where(A > 0, A * lower, A * upper).sum(axis=1)
        hi = np.where(A > 0, A * upper, A * lower).sum(axis=1)
        return lo, hi
