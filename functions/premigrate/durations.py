"""Durations as people write them in options and environment variables: ``30``, ``30s``, ``500ms``, ``2min``.

>>> parse_duration("500ms")
0.5
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|sec|m|min)?")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0}


def parse_duration(text: str) -> float:
    """Seconds; raises ValueError with the accepted forms for anything else (negative numbers included)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write it like 30, 30s, 500ms or 2min")
    return float(match.group("number")) * _UNIT_SECONDS[match.group("unit")]
