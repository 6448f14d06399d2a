"""The one-line error of every value check: ``field: got VALUE; allowed: WHAT``."""

from __future__ import annotations

from typing import Any

__all__ = ["_bad"]


def _bad(field_name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field_name}: got {value!r}; allowed: {allowed}")
