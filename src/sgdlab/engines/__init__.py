"""The engines: ``Full`` (d-dimensional SGD), ``Chain`` (exact Gram-matrix chain), ``ODE``, ``SDE``
(the diffusion limit of the search phase)."""

from .chain import Chain
from .full import Full
from .ode import ODE
from .sde import SDE

__all__ = ["Chain", "Full", "ODE", "SDE"]
