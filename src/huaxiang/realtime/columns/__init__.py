"""Leaf states in columns: one object per leaf holding every person's state as arrays.

The object states of :mod:`huaxiang.realtime.leaves` keep one Python object per person and
leaf; these keep, per leaf, arrays indexed by a dense person index (assigned by the engine),
and fold a whole batch of events and read a whole set of persons with vectorised operations.
Both answer the same three questions with the same values: the value at a moment, the next
moment the value can change without a new event, and what can be forgotten (compaction).
"""
