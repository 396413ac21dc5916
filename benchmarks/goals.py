"""A figure against its goal (a bound it must reach or stay under), and how it is shown: rounded towards
missing the goal, so that no shown value meets a goal its exact value misses (a ratio of 0.8996 against
">= 0.9", shown with two decimals, is 0.89, not 0.90)."""

from __future__ import annotations

import math


def shown(value: float, digits: int, *, at_least: bool) -> str:
    """``value`` with ``digits`` decimals, rounded down for an at-least goal and up for an at-most goal."""
    scale = 10**digits
    rounded = (math.floor if at_least else math.ceil)(round(value * scale, 9)) / scale
    return f"{rounded:.{digits}f}"


def meets(value: float, bound: float, *, at_least: bool) -> bool:
    """Whether ``value`` reaches ``bound`` (``at_least``) or stays at or under it."""
    return value >= bound if at_least else value <= bound
