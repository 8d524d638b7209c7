"""pot_sns: the Sinkhorn-Newton-Sparse entropic OT solver for POT."""

from .api import sinkhorn_newton_sparse, sinkhorn_newton_sparse2
from .options import SNSOptions

__version__ = "0.1.0"

__all__ = ["sinkhorn_newton_sparse", "sinkhorn_newton_sparse2", "SNSOptions", "__version__"]
