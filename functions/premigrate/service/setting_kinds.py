"""How a setting's value is written: each kind takes text (an option, an environment variable) or a JSON
value (an event) and returns the value, or raises ValueError saying what it accepts."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from premigrate.adapters.connection import SSL_MODES
from premigrate.durations import parse_duration
from premigrate.engine import Version
from premigrate.engine.directives import RUN_PHASES

_YES = ("1", "true", "yes", "on")
_NO = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Kind:
    """How a setting's value is written: ``coerce`` takes text (an option, an environment variable) or a
    JSON value (an event) and returns the value or raises ValueError saying what is accepted."""

    coerce: Callable[[object], Any]
    format: Callable[[Any], str] = str
    is_flag: bool = False


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, not {type(value).__name__}")
    return value


def _duration(value: object) -> float:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{value!r} is not a duration; give seconds as a number, or text like 30s, 500ms or 2min")
    return float(value)


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _YES + _NO:
        return value.strip().lower() in _YES
    raise ValueError(f"{value!r} is not yes or no; write one of {', '.join(_YES)} or {', '.join(_NO)}")


def _version(value: object) -> str:
    Version.parse(_text(value))  # raises ValueError naming the accepted form
    return _text(value)


def _sslmode(value: object) -> str:
    if _text(value) not in SSL_MODES:
        raise ValueError(f"{value!r} is not an sslmode; use one of {', '.join(SSL_MODES)}")
    return _text(value)


def _phase(value: object) -> str:
    if _text(value) not in RUN_PHASES:
        raise ValueError(f"{value!r} is not a phase; use one of {', '.join(RUN_PHASES)}")
    return _text(value)


TEXT = Kind(_text)
DURATION = Kind(_duration, format=lambda seconds: f"{seconds!r}s")
FLAG = Kind(_flag, format=lambda on: "true" if on else "false", is_flag=True)
VERSION = Kind(_version)
SSLMODE = Kind(_sslmode)
PHASE = Kind(_phase)
