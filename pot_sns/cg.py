"""Preconditioned conjugate gradient over POT's backend ``nx``."""


def pcg(nx, matvec, rhs, diag, rtol, maxiter):
    """Solve ``A x = rhs`` for a symmetric positive definite operator.

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of ``rhs``.
    matvec : callable
        ``x -> A x``.
    rhs : array-like, shape (k,)
        Right-hand side.
    diag : array-like, shape (k,)
        Positive diagonal of ``A`` (Jacobi preconditioner).
    rtol : float
        Stop when ``||rhs - A x|| <= rtol * ||rhs||``.
    maxiter : int
        Iteration budget.

    Returns
    -------
    x : array-like, shape (k,)
        Approximate solution; on a breakdown at the first iteration, the
        preconditioned right-hand side (a safe ascent direction).
    n_iter : int
        Iterations done.
    status : str
        ``"converged"``, ``"maxiter"`` or ``"breakdown"`` (``p^T A p <= 0``
        or a non-finite value: the operator is not numerically PD).
    """
    x = rhs * 0
    res = rhs
    z = res / diag
    p = z
    rz = float(nx.dot(res, z))
    bnorm = float(nx.norm(rhs))
    if bnorm == 0.0:
        return x, 0, "converged"
    goal = rtol * bnorm
    for k in range(1, maxiter + 1):
        Ap = matvec(p)
        pAp = float(nx.dot(p, Ap))
        if not (pAp > 0.0 and pAp < float("inf")):
            return (rhs / diag if k == 1 else x), k, "breakdown"
        alpha = rz / pAp
        x = x + alpha * p
        res = res - alpha * Ap
        if float(nx.norm(res)) <= goal:
            return x, k, "converged"
        z = res / diag
        rz_new = float(nx.dot(res, z))
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, maxiter, "maxiter"
