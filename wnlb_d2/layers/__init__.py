from .nonlocal_ops import NONLOCAL_IMPLS, NONLOCAL_MODES, nonlocal_aggregate
from .non_local import NONLOCAL_FUSIONS, NONLOCAL_NORMS, NONLOCAL_ZERO_INITS, NonLocalBlock2d

__all__ = [
    "NonLocalBlock2d",
    "nonlocal_aggregate",
    "NONLOCAL_MODES",
    "NONLOCAL_IMPLS",
    "NONLOCAL_FUSIONS",
    "NONLOCAL_NORMS",
    "NONLOCAL_ZERO_INITS",
]
