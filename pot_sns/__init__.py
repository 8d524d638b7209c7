"""pot_sns: the Sinkhorn-Newton-Sparse entropic OT solver for POT."""

from .api import sinkhorn_newton_sparse, sinkhorn_newton_sparse2
from .batch import pairwise, pairwise_samples, solve_batch
from .options import SNSOptions
from .plugin import register, unregister
from .unbalanced import sinkhorn_newton_sparse_unbalanced, sinkhorn_newton_sparse_unbalanced2

__version__ = "0.1.0"

__all__ = ["sinkhorn_newton_sparse", "sinkhorn_newton_sparse2", "SNSOptions", "register",
           "unregister", "solve_batch", "pairwise", "pairwise_samples",
           "sinkhorn_newton_sparse_unbalanced", "sinkhorn_newton_sparse_unbalanced2",
           "__version__"]

# importing pot_sns gives ot.solve & co. method="sns"; pot_sns.unregister() undoes it
register()
