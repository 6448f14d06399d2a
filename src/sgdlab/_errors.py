"""The one-line error of every value check: ``field: got VALUE; allowed: WHAT``."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["_bad", "did_you_mean"]


def _bad(field_name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field_name}: got {value!r}; allowed: {allowed}")


def did_you_mean(value: Any, names: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest of ``names`` to ``value`` (difflib), else ``""``."""
    if not isinstance(value, str):
        return ""
    names = [str(n) for n in names]
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    if not close:
        lower = {n.lower(): n for n in names}
        close = [lower[c] for c in difflib.get_close_matches(value.lower(), list(lower), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]!r}?)" if close else ""
