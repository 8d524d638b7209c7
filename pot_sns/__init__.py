"""pot_sns: the Sinkhorn-Newton-Sparse entropic OT solver for POT."""

from .api import sinkhorn_newton_sparse, sinkhorn_newton_sparse2
from .options import SNSOptions
from .plugin import register, unregister

__version__ = "0.1.0"

__all__ = ["sinkhorn_newton_sparse", "sinkhorn_newton_sparse2", "SNSOptions", "register",
           "unregister", "__version__"]

# importing pot_sns gives ot.solve & co. method="sns"; pot_sns.unregister() undoes it
register()
