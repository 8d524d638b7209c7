"""Public solvers with the signatures, defaults and return values of ``ot.sinkhorn``."""

import warnings

import numpy as np
from ot.utils import list_to_array

from . import implicit, validation
from .objective import BalancedObjective
from .solver import solve
from .kernels import make_kernel

NOT_CONVERGED = (
    "Sinkhorn did not converge. You might want to "
    "increase the number of iterations `numItermax` "
    "or the regularization parameter `reg`."
)


def sinkhorn_newton_sparse(a, b, M, reg, numItermax=1000, stopThr=1e-9, verbose=False,
                           log=False, warn=True, warmstart=None, **kwargs):
    r"""Solve entropic OT with the Sinkhorn-Newton-Sparse algorithm.

    Same problem, arguments and outputs as :func:`ot.sinkhorn`:

    .. math::
        \gamma = \mathop{\arg \min}_\gamma \quad \langle \gamma, \mathbf{M} \rangle_F +
        \mathrm{reg}\cdot\Omega(\gamma)
        \quad \text{s.t.} \ \gamma \mathbf{1} = \mathbf{a}, \
        \gamma^T \mathbf{1} = \mathbf{b}, \ \gamma \geq 0

    with :math:`\Omega(\gamma)=\sum_{i,j} \gamma_{i,j}\log(\gamma_{i,j})`. A few
    log-domain Sinkhorn sweeps are followed by Newton steps on the dual whose
    Hessian keeps only the large entries of the plan, solved by conjugate
    gradient and guarded by a line search [1]_.

    Parameters
    ----------
    a : array-like, shape (dim_a,)
        Source weights (``[]`` means uniform).
    b : array-like, shape (dim_b,) or (dim_b, n_hists)
        Target weights (``[]`` means uniform). With several histograms the
        loss of each problem is returned, as in :func:`ot.sinkhorn`.
    M : array-like, shape (dim_a, dim_b)
        Cost matrix.
    reg : float
        Regularization term > 0.
    numItermax : int, optional
        Largest number of iterations (Sinkhorn sweeps and Newton steps).
    stopThr : float, optional
        Stop when the 2-norm of the marginal violation,
        ``sqrt(||a - P 1||_2^2 + ||b - P^T 1||_2^2)``, is below this
        threshold: POT's convention (the error of :func:`ot.sinkhorn`).
        This is not the L1 error ``||a - P 1||_1 + ||b - P^T 1||_1`` that
        the benchmark (``python -m pot_sns.bench``, option ``--tol``)
        targets, which can be up to ``sqrt(dim_a + dim_b)`` times larger:
        the benchmark tightens ``stopThr`` until the plan meets its L1
        target.
    verbose : bool, optional
        Print a progress table.
    log : bool, optional
        Also return a dict of diagnostics.
    warn : bool, optional
        Warn (``UserWarning``) when the solver did not reach ``stopThr``.
    warmstart : tuple of arrays, shape (dim_a,), (dim_b,), optional
        Initial potentials ``(log_u, log_v)`` in :func:`ot.bregman.sinkhorn_log`'s
        convention (a list of such pairs when ``b`` has several histograms).
        The Sinkhorn warm-up is skipped when given.
    **kwargs :
        Keyword-only SNS options, see :class:`pot_sns.SNSOptions`
        (``n_sinkhorn``, ``sparsity``, ``mass_ratio``, ``density``,
        ``cg_rtol``, ``cg_maxiter``, ``ls_c1``, ...). Unknown names raise
        ``TypeError``.

    Returns
    -------
    gamma : array-like, shape (dim_a, dim_b)
        Optimal plan (a vector of losses when ``b`` has several histograms),
        in the backend, dtype and device of the inputs.
    log : dict
        Only when ``log=True``. As in :func:`ot.bregman.sinkhorn_log`:

        - ``err``: list of float, the marginal error (the 2-norm of
          ``stopThr``) after each Sinkhorn sweep, Newton step and fall-back
          sweep, plus one at the start of the Newton stage;
        - ``niter``: int, the iterations done, ``n_sinkhorn + n_newton``;
        - ``log_u``, ``log_v``: the potentials divided by ``reg`` (``-inf``
          at zero weights); ``u``, ``v``: their exponentials.

        Diagnostics of SNS:

        - ``n_sinkhorn``: int, the Sinkhorn sweeps, those of the warm-up,
          of the epsilon scaling and of the fall-backs together;
        - ``n_scaling``: int, how many of them ran at the larger
          regularisations of the epsilon-scaling warm-up (0 without it);
        - ``n_newton``: int, the accepted Newton steps;
        - ``cg_iters``, ``density``, ``ls_steps``: lists with one entry per
          Newton step tried (refused ones too): the conjugate gradient
          iterations, the kept fraction of the plan in the Hessian, and the
          backtracking steps of the line search (0: the first step length
          was accepted);
        - ``fallbacks``: list of ``(iteration, reason)``, the safeguards
          taken (see :doc:`/input_rules`);
        - ``stages``: list of str, for each entry of ``err`` the stage that
          measured it: ``"sinkhorn"``, ``"newton"`` or ``"fallback"``;
        - ``times``: list of float, for each entry of ``err`` the seconds
          since the start of the solve (wall clock: the benchmark's
          convergence plots draw ``err`` against it);
        - ``status``: ``"converged"``, ``"max_iter"`` or ``"stalled"``.

        With several histograms, ``log_u``, ``log_v``, ``u``, ``v`` have one
        column per histogram, and ``err``, ``niter``, ``n_sinkhorn``,
        ``n_newton``, ``status`` and ``fallbacks`` are lists with one entry
        per histogram.

    Notes
    -----
    Arrays that require gradients are solved on detached copies: the plan
    carries no autograd graph (use ``ot.solve(..., method="sns")`` for
    gradients of the OT value). The losses returned for several histograms
    carry the gradients of ``<M, P*>`` w.r.t. ``M``, ``a`` and ``b`` at the
    optimum, by implicit differentiation (:mod:`pot_sns.implicit`), as
    :func:`ot.sinkhorn`'s autograd through its iterations converges to.

    Examples
    --------
    >>> import pot_sns
    >>> a = [.5, .5]
    >>> b = [.5, .5]
    >>> M = [[0., 1.], [1., 0.]]
    >>> pot_sns.sinkhorn_newton_sparse(a, b, M, 1)
    array([[0.36552929, 0.13447071],
           [0.13447071, 0.36552929]])

    References
    ----------
    .. [1] X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil,
       T. Xiao, L. Ying. Accelerating Sinkhorn Algorithm with Sparse Newton
       Iterations. ICLR 2024.
    """
    # every check, the options' included, once and cheapest first, before any
    # heavy work; the checked problem carries the parsed options
    p = validation.check_problem(a, b, M, reg, numItermax, stopThr, warmstart, options=kwargs)
    nx, a, b, M, reg, given = _promote(p)
    if p.n_hists:
        res, out = _solve_hists(p, nx, a, b, M, reg, given, verbose, warn)
        return (res, out) if log else res
    P, lg = _solve_one(nx, a, b, M, reg, p.options, p.numItermax, p.stopThr, verbose, warn,
                       p.warmstart, p.cost_range)
    return (P, lg) if log else P


def _solve_hists(p, nx, a, b, M, reg, given, verbose, warn):
    """One problem per column of ``b``: the losses and a merged log. ``p``:
    the checked problem, whose ``(a, b, M)`` are promoted as ``a``, ``b``,
    ``M``; ``given``: the caller's arrays (:func:`_promote`)."""
    starts = p.warmstart if p.warmstart is not None else [None] * p.n_hists
    losses, us, vs, logs = [], [], [], []
    for k in range(p.n_hists):
        P, lg = _solve_one(nx, a, b[:, k], M, reg, p.options, p.numItermax, p.stopThr,
                           verbose, warn, starts[k], p.cost_range)
        losses.append(_loss(nx, M, P, reg, given, k))
        us.append(lg["log_u"])
        vs.append(lg["log_v"])
        logs.append(lg)
    out = {"log_u": nx.stack(us, 1), "log_v": nx.stack(vs, 1)}
    out["u"] = nx.exp(out["log_u"])
    out["v"] = nx.exp(out["log_v"])
    for key in ("err", "niter", "n_sinkhorn", "n_newton", "status", "fallbacks"):
        out[key] = [lg[key] for lg in logs]
    return nx.stack(losses), out


def _loss(nx, M, P, reg, given, hist=None):
    """``<M, P>``; when the caller's ``(M, a, b)`` record gradients (torch),
    with the gradients of the loss at the optimum (:mod:`pot_sns.implicit`),
    as POT's autograd through the Sinkhorn iterations converges to. ``hist``:
    the column of a 2-D ``b`` that ``P`` solves."""
    loss = nx.sum(M * P)
    if not implicit.requires_grad(*given):
        return loss
    gM, ga, gb = implicit.linear_loss_gradients(nx, M, P, reg)
    M0, a0, b0 = given
    if hist is not None:
        gb = nx.stack([gb if k == hist else gb * 0 for k in range(b0.shape[1])], 1)
    return implicit.attach(nx, loss, [(M0, gM), (a0, ga), (b0, gb)])


def sinkhorn_newton_sparse2(a, b, M, reg, numItermax=1000, stopThr=1e-9, verbose=False,
                            log=False, warn=False, warmstart=None, **kwargs):
    r"""Entropic OT loss ``<P, M>`` with the Sinkhorn-Newton-Sparse solver.

    Mirrors :func:`ot.sinkhorn2`: same arguments as
    :func:`sinkhorn_newton_sparse`, with ``warn=False`` by default.
    ``stopThr`` bounds the 2-norm of the marginal violation, as in POT, not
    the L1 error that the benchmark targets (see
    :func:`sinkhorn_newton_sparse`).

    Parameters
    ----------
    a, b, M, reg, numItermax, stopThr, verbose, log, warn, warmstart, **kwargs
        See :func:`sinkhorn_newton_sparse`.

    Returns
    -------
    W : float or array-like, shape (n_hists,)
        Linear loss :math:`\langle \gamma^*, \mathbf{M} \rangle_F` (one per
        histogram of ``b``), in the backend of the inputs. When ``M``, ``a``
        or ``b`` record gradients (torch), so does ``W``: the exact
        derivative at the optimum, by implicit differentiation (one
        conjugate gradient solve with the full plan), which is what POT's
        autograd through the Sinkhorn iterations converges to.
    log : dict
        Only when ``log=True``; see :func:`sinkhorn_newton_sparse`.

    Examples
    --------
    >>> import pot_sns
    >>> round(float(pot_sns.sinkhorn_newton_sparse2([.5, .5], [.5, .5],
    ...                                              [[0., 1.], [1., 0.]], 1)), 8)
    0.26894142
    """
    # every check, the options' included, once and cheapest first, before any
    # heavy work; the checked problem carries the parsed options
    p = validation.check_problem(a, b, M, reg, numItermax, stopThr, warmstart, options=kwargs,
                                 caller="sinkhorn_newton_sparse2")
    nx, a, b, M, reg, given = _promote(p)
    if p.n_hists:
        res, out = _solve_hists(p, nx, a, b, M, reg, given, verbose, warn)
    else:
        P, out = _solve_one(nx, a, b, M, reg, p.options, p.numItermax, p.stopThr, verbose,
                            warn, p.warmstart, p.cost_range)
        res = _loss(nx, M, P, reg, given)
    return (res, out) if log else res


def solve_checked(p, verbose=False, warn=True):
    """Solve a problem that :func:`pot_sns.validation.check_problem` has
    checked already, with the options it carries.

    The entry of ``ot.solve(..., method="sns")``, so that its inputs are not
    checked a second time.

    Parameters
    ----------
    p : pot_sns.validation.Problem
        A checked problem with one histogram (``p.n_hists == 0``); its
        ``numItermax``, ``stopThr``, ``warmstart`` and ``options`` (the SNS
        options given to ``check_problem``) are used as they are.
    verbose, warn : bool, optional
        See :func:`sinkhorn_newton_sparse`.

    Returns
    -------
    gamma : array-like, shape (dim_a, dim_b)
        Optimal plan.
    log : dict
        The log of :func:`sinkhorn_newton_sparse`.

    Examples
    --------
    >>> from pot_sns.api import solve_checked
    >>> from pot_sns.validation import check_problem
    >>> p = check_problem([], [], [[0., 1.], [1., 0.]], 1.0, options={"n_sinkhorn": 3})
    >>> P, log = solve_checked(p)
    >>> P.round(4)
    array([[0.3655, 0.1345],
           [0.1345, 0.3655]])
    """
    if p.n_hists:
        raise ValueError("solve_checked solves one histogram; b has shape %s (use "
                         "sinkhorn_newton_sparse for several)" % (tuple(p.b.shape),))
    nx, a, b, M, reg, _ = _promote(p)
    return _solve_one(nx, a, b, M, reg, p.options, p.numItermax, p.stopThr, verbose, warn,
                      p.warmstart, p.cost_range)


def _promote(p):
    """The arrays of a checked problem, detached, in POT's common dtype; and
    the caller's own arrays."""
    nx, a, b, M, reg = p.nx, p.a, p.b, p.M, p.reg
    given = (M, a, b)  # the caller's arrays, which may record gradients
    M, a, b = nx.detach(M, a, b)
    # POT's promotion rules: the plan gets the common float type of M, a, b
    probe = M[:1, 0] * 0 + a[:1] * 0 + nx.reshape(b, (-1,))[:1] * 0
    if not nx.is_floating_point(probe):
        probe = probe * 1.0
    dtype = nx.dtype_device(probe)[0]
    # probe[:1], not probe[0]: torch (and cupy) do not promote on 0-d operands
    M, a, b = (x if nx.dtype_device(x)[0] == dtype else x + probe[:1] for x in (M, a, b))
    return nx, a, b, M, reg, given


#: the solver's diagnostics copied into every ``log`` dict (see SolverResult)
DIAGNOSTICS = ("niter", "n_sinkhorn", "n_newton", "n_scaling", "cg_iters", "density",
               "ls_steps", "fallbacks", "stages", "times", "status")


def _support(nx, a, b):
    """Indices of the positive weights of ``a`` and ``b``, and whether every
    weight is positive (zero weights are solved off: their potentials are
    ``-inf``)."""
    ia = np.flatnonzero(nx.to_numpy(a) > 0)
    ib = np.flatnonzero(nx.to_numpy(b) > 0)
    return ia, ib, len(ia) == a.shape[0] and len(ib) == b.shape[0]


def _embed_solution(nx, P, u, v, ia, ib, shape):
    """The plan and potentials of the problem restricted to ``(ia, ib)``
    placed back: zero plan rows and columns, ``-inf`` potentials."""
    n, m = shape
    return (_embed(nx, P, ia, ib, shape), _embed(nx, u, ia, None, (n,), fill=-np.inf),
            _embed(nx, v, ib, None, (m,), fill=-np.inf))


def _solve_one(nx, a, b, M, reg, opts, numItermax, stopThr, verbose, warn, warmstart,
               cost_range=None):
    """One problem: restrict to the support of the weights, solve, embed back.
    ``cost_range``: ``(min, max)`` of ``M`` when known (the input check)."""
    ia, ib, full = _support(nx, a, b)
    if warmstart is not None:
        warmstart = tuple(_cast(nx, w, a) for w in warmstart)
    if full:
        Ms, As, Bs, ws = M, a, b, warmstart
    else:
        ta, tb = nx.from_numpy(ia), nx.from_numpy(ib)
        Ms = M[ta][:, tb]
        As, Bs = a[ta], b[tb]
        ws = None if warmstart is None else (warmstart[0][ta], warmstart[1][tb])
    # the weights may differ in mass by a rounding error: solve the balanced problem
    Bs = Bs * (nx.sum(As) / nx.sum(Bs))
    kernel = make_kernel(nx, Ms, reg, opts.bin_width, opts.n_bins)
    if full and cost_range is not None:
        kernel.set_cost_range(*cost_range)
    res = solve(kernel, BalancedObjective(nx, As, Bs, reg), opts, numItermax, stopThr, ws,
                verbose)
    P = res.P if res.P is not None else kernel.plan(res.u, res.v)
    log_u, log_v = res.u, res.v
    if not full:
        P, log_u, log_v = _embed_solution(nx, P, log_u, log_v, ia, ib, M.shape)
    if res.status != "converged" and warn:
        warnings.warn(NOT_CONVERGED, UserWarning, stacklevel=3)
    with kernel.errstate():
        # at small reg, f/reg is large and exp overflows to inf (as in POT's
        # log["u"]); that is expected, not a warning to leak to the user
        u_exp, v_exp = nx.exp(log_u), nx.exp(log_v)
    lg = {"err": res.errs, "log_u": log_u, "log_v": log_v, "u": u_exp, "v": v_exp}
    lg.update((key, getattr(res, key)) for key in DIAGNOSTICS)
    return P, lg


def _cast(nx, x, ref):
    """Array ``x`` in the backend, dtype and device of ``ref``."""
    x = list_to_array(x) if isinstance(x, list) else x
    if isinstance(x, np.ndarray) and nx.__name__ != "numpy":
        x = nx.from_numpy(x, type_as=ref)
    x = nx.detach(x)
    if nx.dtype_device(x) != nx.dtype_device(ref):
        # e.g. a CPU warm start for a CUDA problem: O(n) round trip
        x = nx.from_numpy(nx.to_numpy(x), type_as=ref)
    return x


def _embed(nx, x, rows, cols, shape, fill=0.0, values=None):
    """Place ``x`` at ``rows`` (and ``cols``) of an array of ``shape`` filled
    with ``fill``; ``values=(index, array)`` sets more entries."""
    host = np.full(shape, fill, dtype=nx.to_numpy(x[:1]).dtype)
    if cols is None:
        host[rows] = nx.to_numpy(x)
    else:
        host[np.ix_(rows, cols)] = nx.to_numpy(x)
    if values is not None and values[1] is not None:
        host[values[0]] = nx.to_numpy(values[1])
    return nx.from_numpy(host, type_as=x)
