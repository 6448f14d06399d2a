"""The engines: ``Full`` (d-dimensional SGD), ``Chain`` (exact Gram-matrix chain), ``ODE``."""

from .chain import Chain
from .full import Full
from .ode import ODE

__all__ = ["Chain", "Full", "ODE"]
