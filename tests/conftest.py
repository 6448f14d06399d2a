"""Shared test configuration: the engines need float64 (x64) for the chain and Full(float64)."""

import jax

jax.config.update("jax_enable_x64", True)
