"""The runtime's exceptions, the one rule for a sensor value, and the one check of a named choice.

A user's mistake (a bad line, a bad bundle) raises ``InputError`` or ``BundleError`` with a
sentence that names the thing, the value and the rule; anything else is a bug and keeps its
traceback.
"""
import math
from typing import Sequence

import numpy as np

# Readings beyond this are garbage. The bound keeps every stage-1 feature within the float32
# the forest compares in (a larger value overflowed there: scikit-learn refuses such input).
MAX_ABS_VALUE = 1e30


class BundleError(ValueError):
    """A bundle is missing, corrupt, or does not match what is asked of it."""


class CheckpointError(ValueError):
    """A checkpoint of learnt state cannot be used (corrupt, too big, another bundle's) or written."""


class InputError(ValueError):
    """One reading, a header or an input file cannot be used; a stream itself goes on."""


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """Refuse a value outside its choices with a ValueError that names both.

    >>> check_choice("mode", "hybrid", ("hybrid", "lstm"))
    >>> check_choice("mode", "fast", ("hybrid", "lstm"))
    Traceback (most recent call last):
    ...
    ValueError: mode 'fast' is not one of hybrid, lstm
    """
    if value not in choices:
        raise ValueError("%s %r is not one of %s" % (what, value, ", ".join(choices)))


def value_problem(value: float) -> str:
    """Why a sensor value cannot be scored ('' when it can): NaN, infinite, or beyond +-MAX_ABS_VALUE.

    ``value`` is a float or an int of any size (a JSON integer of hundreds of digits is out of range).

    >>> value_problem(51.2), value_problem(float("nan")), value_problem(2e30), value_problem(10**400)
    ('', 'is NaN or infinite', 'is out of range (|value| > 1e+30)', 'is out of range (|value| > 1e+30)')
    """
    if isinstance(value, int) and abs(value) > MAX_ABS_VALUE:
        return "is out of range (|value| > %g)" % MAX_ABS_VALUE      # before float(): it may not fit one
    if not math.isfinite(value):
        return "is NaN or infinite"
    if abs(value) > MAX_ABS_VALUE:
        return "is out of range (|value| > %g)" % MAX_ABS_VALUE
    return ""


def valid_values(values: np.ndarray) -> np.ndarray:
    """The same rule over an array: True where a value may be scored. [...] -> [...] bool."""
    return np.isfinite(values) & (np.abs(values) <= MAX_ABS_VALUE)
