"""Shared test configuration: the engines need float64 (x64) for the chain and Full(float64)."""

import jax

jax.config.update("jax_enable_x64", True)

from sgdlab._cache import enable_compilation_cache  # noqa: E402

# compiled programs persist across test modules and runs (SGDLAB_COMPILATION_CACHE=off disables)
enable_compilation_cache()
