"""Hypothesis strategies shared by the property tests: arbitrary JSON-like values.

Everything a JSON body can decode to: None, booleans, integers (JSON has no size limit, so
numbers far beyond 64 bits, up to Python's 4300-digit parsing limit), floats including NaN and
the infinities (Python's json accepts ``NaN`` and ``Infinity``), any text, lists and objects.
"""

from __future__ import annotations

from hypothesis import strategies as st

HUGE_INTS = st.sampled_from(
    [2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**400, -(10**400), 10**4000]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e-320, 1e308, float("nan"), float("inf"), float("-inf")]
)
TEXT = st.text(max_size=24)

scalars = st.none() | st.booleans() | st.integers() | HUGE_INTS | FLOATS | TEXT
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def around(plausible: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly values of the right shape (to get past the first checks), sometimes anything."""
    return st.one_of(plausible, plausible, json_values)


def number_near(low: float, high: float) -> st.SearchStrategy:
    """Numbers in and just outside [low, high], as ints, floats and numeric strings."""
    inside = st.floats(min_value=low, max_value=high)
    edges = st.sampled_from([low, high, low - 1e-9, high + 1e-9, low - 1, high + 1])
    ints = st.integers(min_value=int(low) - 2, max_value=int(high) + 2)
    return st.one_of(inside, edges, ints, HUGE_INTS)


def int_near(low: int, high: int | None = None) -> st.SearchStrategy:
    top = high if high is not None else low + 10_000
    return st.one_of(
        st.integers(min_value=low - 2, max_value=top + 2),
        st.sampled_from([low, low - 1, top, top + 1]),
        HUGE_INTS,
    )
