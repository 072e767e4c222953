"""Metric tags: what a stored metric value is, and when a person holds one.

A metric tag's measure (``sum(revenue of "Order Completed", 90d)``, ``count(purchase)``,
``days_since(last(purchase))``) is compiled beside the rule tags of a refresh, into the same
query (``compute.py``). Its value is stored as a JSON number; whole numbers without a fraction.
"""

from __future__ import annotations

import math

from huaxiang.rules.ast import DaysSince, EventCount, Measure

_EXACT = 2**53


def evidence(measure: Measure) -> EventCount | None:
    """The count whose being above 0 says the person has a value (None: the measure's own NULL
    says it, as for ``days_since``)."""
    if isinstance(measure, DaysSince):
        return None
    if isinstance(measure, EventCount):
        return measure
    return EventCount(measure.match, measure.window)


def number_value(value: float) -> int | float:
    """A measure's value as stored: ``3`` rather than ``3.0``, fractions as they are."""
    number = float(value)
    if math.isfinite(number) and number.is_integer() and abs(number) < _EXACT:
        return int(number)
    return number
