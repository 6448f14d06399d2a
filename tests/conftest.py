"""Shared test configuration: the engines need float64 (x64) for the chain and Full(float64)."""

import jax

jax.config.update("jax_enable_x64", True)

from sgdlab._cache import enable_compilation_cache  # noqa: E402

# compiled programs persist across test modules and runs (SGDLAB_COMPILATION_CACHE=off disables)
enable_compilation_cache()


# --------------------------------------------------------------------------------------
# SGDLAB_TEST_COMPILE_PROFILE=FOLDER: per test, the time JAX spent tracing, lowering and
# compiling each function (jax.monitoring events), written to FOLDER/<module>.json at the end
# (benchmarks/compile_profile.py summarises them). Off by default.
# --------------------------------------------------------------------------------------
import os as _os  # noqa: E402

_PROFILE = _os.environ.get("SGDLAB_TEST_COMPILE_PROFILE")
_current = ["(collection)"]
_events: dict[str, dict[str, list[float]]] = {}

if _PROFILE:
    from jax import monitoring as _monitoring

    _KINDS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
              "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
              "/jax/core/compile/backend_compile_duration": "compile"}

    def _listen(event: str, duration: float, **kw) -> None:
        kind = _KINDS.get(event)
        if kind is None:
            return
        key = f"{kind}:{kw.get('fun_name', '?')}"
        rec = _events.setdefault(_current[0], {}).setdefault(key, [0, 0.0])
        rec[0] += 1
        rec[1] += duration

    _monitoring.register_event_duration_secs_listener(_listen)


def pytest_runtest_setup(item):
    _current[0] = item.nodeid


def pytest_sessionfinish(session, exitstatus):
    if not _PROFILE:
        return
    import json
    from pathlib import Path

    out = Path(_PROFILE)
    out.mkdir(parents=True, exist_ok=True)
    args = [a for a in session.config.args if a.endswith(".py")]
    name = Path(args[0]).stem if len(args) == 1 else "session"
    (out / f"{name}.json").write_text(json.dumps(_events, indent=1))
