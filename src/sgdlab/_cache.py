"""JAX's persistent compilation cache, on by default for the CLI, sweep workers and tests.

Compiled XLA programs are kept in a user cache folder, so a new process that builds the
same structure (same model, engine, shapes) loads it instead of compiling again. The folder
is ``$SGDLAB_COMPILATION_CACHE`` if set, else ``$XDG_CACHE_HOME/sgdlab/jax`` (default
``~/.cache/sgdlab/jax``). ``SGDLAB_COMPILATION_CACHE=off`` turns it off.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "enable_compilation_cache"]


def cache_dir() -> Path | None:
    """The cache folder, or ``None`` when turned off."""
    env = os.environ.get("SGDLAB_COMPILATION_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "false", "no", ""):
        return None
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sgdlab" / "jax"


def enable_compilation_cache() -> Path | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir` (no-op when off or when
    the folder cannot be created). Returns the folder in use."""
    import jax

    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
