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
  over time (Ricci, Merger, Goldt 2026), on the full engine, :mod:`sgdlab.reproduce.fourier`;
- ``curriculum``: curricula vs overparameterisation in the XOR-like Gaussian mixture: hard-test
  error per schedule, the curriculum benefit and the success probability vs the width K, the
  relevant-manifold and rule sub-tasks, the lottery (Sarao Mannelli, Ivashynka, Saxe, Saglietti
  2024), :mod:`sgdlab.reproduce.curriculum`;
- ``pretraining``: PCA pre-training and transfer starts on spiked He3 single-index problems
  (``--link NAME``: another link of information exponent k >= 2, step rules following k):
  samples to weak recovery vs d for random, PCA and transfer starts, m(t) with the ODE, the PCA
  overlap vs BBP, the (lambda, eta1) trap diagram of the (m, r) flow, PCA signs
  (Jones-McCormick, Jagannath, Sen 2025), :mod:`sgdlab.reproduce.pretraining`;
- ``w2s``: weak-to-strong fine-tuning of a pre-trained two-layer reward model with task subspaces:
  alignment with the target direction, off-target retention vs the correlation rho, W2S vs SFT,
  PGR, chain vs ODE (Awano, Suzuki 2026), :mod:`sgdlab.reproduce.w2s`.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["MEASURED", "REPRODUCTIONS", "about", "get", "plan_points"]


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


def _curriculum() -> Callable:
    from .curriculum import reproduce

    return reproduce


def _pretraining() -> Callable:
    from .pretraining import reproduce

    return reproduce


def _w2s() -> Callable:
    from .w2s import reproduce

    return reproduce


REPRODUCTIONS: dict[str, Callable[[], Callable]] = {
    "info-exponent": _info_exponent,
    "smoothing": _smoothing,
    "batch-size": _batch_size,
    "ssi": _ssi,
    "fourier": _fourier,
    "curriculum": _curriculum,
    "pretraining": _pretraining,
    "w2s": _w2s,
}


#: Measured wall times (2-core CPU, empty store and persistent compilation cache partly warm):
#: ``full`` from the ``compute_s`` / ``wall_time_s`` of the full runs' results.json, ``quick``
#: from the quick reproductions of the test suite (BENCHMARKS.md). A reproduction without an
#: entry is listed as not measured; ``sgdlab reproduce NAME --dry-run`` gives its planned
#: runs and seed-steps.
MEASURED: dict[str, dict[str, str]] = {
    "info-exponent": {"quick": "about 2 min", "full": "about 29 min, + 51 min for the SDE part (under load)"},
    "smoothing": {"quick": "about 1.5 min", "full": "about 23 min"},
    "batch-size": {"quick": "about 2 min", "full": "about 93 min"},
    "ssi": {"quick": "about 2 min", "full": "about 28 min"},
    "fourier": {"quick": "about 1.5 min"},
    "curriculum": {"quick": "about 3 min (part 5 included)", "full": "about 28 min (machine under load; part 5: 77 s)"},
    "w2s": {"quick": "about 1-2 min (machine under load)", "full": "about 4-6 min (machine under load)"},
}


def get(name: str) -> Callable:
    """The ``reproduce(**options)`` function of a reproduction."""
    from .._errors import did_you_mean
    from ..config import ConfigError

    if name not in REPRODUCTIONS:
        raise ConfigError(f"NAME: got {name!r}{did_you_mean(name, REPRODUCTIONS)}; allowed: {', '.join(REPRODUCTIONS)}")
    return REPRODUCTIONS[name]()


def _module(name: str):
    return sys.modules[get(name).__module__]


def about(name: str) -> str:
    """The first sentence of the reproduction module's docstring (what it reproduces, whose paper)."""
    doc = inspect.getdoc(_module(name)) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return first.split(": ", 1)[1] if first.startswith("``sgdlab reproduce") and ": " in first else first


def plan_points(name: str, **options: Any) -> list | None:
    """The runs (:class:`~sgdlab.reproduce._common.Point`) a reproduction would compute with
    these options (``quick``, ``engine``, ``seeds``, ``links``, ...), from its module's
    ``plan(**options)``; ``None`` when the module has no such plan."""
    from ._common import Point

    plan = getattr(_module(name), "plan", None)
    if plan is None:
        return None
    params = inspect.signature(plan).parameters
    if any(p.default is p.empty and p.kind is not p.VAR_KEYWORD for p in params.values()):
        return None  # a plan of another shape (e.g. of a specification object)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    out = plan(**{k: v for k, v in options.items() if takes_any or k in params})
    pts = out[1] if isinstance(out, tuple) and len(out) == 2 else out
    return list(pts) if isinstance(pts, list) and all(isinstance(p, Point) for p in pts) else None
