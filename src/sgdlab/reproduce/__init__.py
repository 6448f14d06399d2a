"""Reproductions of systems of the literature: ``sgdlab reproduce NAME [--quick]``.

Each reproduction is a list of runs (executed through the results store, so a rerun reads
them back and an interrupted one resumes), the statistics that test the paper's claim, and
its outputs: figures (PNG), ``table.md`` and ``results.json`` (fitted numbers with their
confidence intervals beside the theory, wall time, device, package versions).

- ``info-exponent``: samples to weak recovery vs d for h1..h4 (Ben Arous, Gheissari,
  Jagannath 2021), :mod:`sgdlab.reproduce.info_exponent`;
- ``smoothing``: the same with the smoothed loss of Damian, Nichani, Ge, Lee (2023),
  :mod:`sgdlab.reproduce.smoothing`;
- ``batch-size``: iterations vs minibatch size, square vs correlation loss, the phase
  diagram, a large-batch failure of plain SGD and ODE vs chain for an erf committee
  (Arnaboldi, Dandi, Krzakala, Loureiro, Pesce, Stephan 2024),
  :mod:`sgdlab.reproduce.batch_size`;
- ``ssi``: sequence single-index models and single-layer attention: escape time vs sequence
  length for tied, position-specific and attention students, the positional/semantic
  landscape and its omega transitions, ODE vs simulation (Arnaboldi, Loureiro, Stephan,
  Krzakala, Zdeborova 2025), :mod:`sgdlab.reproduce.ssi`;
- ``fourier``: classes that share their Fourier amplitudes and differ in their phases: samples
  to above-chance accuracy vs N (~N^3 for a flat spectrum, fitted as a power law and against
  N^3 log^2 N), faster learning with power-law spectra, amplitudes before phases, weight spectra
  over time (Ricci, Merger, Goldt 2026), on the full engine, :mod:`sgdlab.reproduce.fourier`.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["REPRODUCTIONS", "get"]


def _info_exponent() -> Callable:
    from .info_exponent import reproduce

    return reproduce


def _smoothing() -> Callable:
    from .smoothing import reproduce

    return reproduce


def _batch_size() -> Callable:
    from .batch_size import reproduce

    return reproduce


def _ssi() -> Callable:
    from .ssi import reproduce

    return reproduce


def _fourier() -> Callable:
    from .fourier import reproduce

    return reproduce


REPRODUCTIONS: dict[str, Callable[[], Callable]] = {
    "info-exponent": _info_exponent,
    "smoothing": _smoothing,
    "batch-size": _batch_size,
    "ssi": _ssi,
    "fourier": _fourier,
}


def get(name: str) -> Callable:
    """The ``reproduce(**options)`` function of a reproduction."""
    from ..config import ConfigError

    if name not in REPRODUCTIONS:
        raise ConfigError(f"NAME: got {name!r}; allowed: {', '.join(REPRODUCTIONS)}")
    return REPRODUCTIONS[name]()
