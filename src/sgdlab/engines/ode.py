"""placeholder"""
from dataclasses import dataclass
@dataclass(frozen=True)
class ODE:
    second_order: bool = True
    name: str = "ode"
