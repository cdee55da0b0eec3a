"""Validation of fusion-operator options: a bad value raises ConfigError naming the option."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def positive_int(value: Any, option: str, op: str, default: int | None = None) -> int:
    """``value`` (or ``default`` when it is None) checked to be an int >= 1."""
    if value is None:
        value = default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"fusion {op!r}: option {option!r} must be a positive int, got {value!r}")
    return value


def probability(value: Any, option: str, op: str) -> float:
    """``value`` checked to be a float in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"fusion {op!r}: option {option!r} must be a number in [0, 1), got {value!r}")
    return float(value)
