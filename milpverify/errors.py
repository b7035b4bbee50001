"""Exception tree of milpverify; imports nothing from the package.

Every error a user can cause subclasses both `MilpVerifyError` and the matching
builtin, so callers can catch either. Outcomes of a solve (infeasible, time limit)
are results, never exceptions.
"""


class MilpVerifyError(Exception):
    """Base class of every error milpverify raises on purpose."""


class UnsupportedModelError(MilpVerifyError, NotImplementedError):
    """An op, attribute or topology that milpverify cannot encode."""


class InvalidModelError(MilpVerifyError, ValueError):
    """A malformed model: unreadable file, bad graph, shape mismatch, NaN weights."""


class InvalidInputError(MilpVerifyError, ValueError):
    """A bad argument: input array, eps, norm, region, option or data file."""


class UnboundedError(MilpVerifyError, ValueError):
    """A non-finite bound would reach a big-M constant."""


class SolverError(MilpVerifyError, RuntimeError):
    """A solver backend is missing or crashed."""
