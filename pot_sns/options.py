"""Tuning options of the SNS solver, parsed from keyword arguments."""

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SNSOptions:
    """Keyword-only options of :func:`pot_sns.sinkhorn_newton_sparse`.

    Parameters
    ----------
    n_sinkhorn : int
        Log-domain Sinkhorn sweeps before the first Newton step (the paper's
        N1). Skipped when a ``warmstart`` is given.
    sinkhorn_rate : float
        After the warm-up, Sinkhorn sweeps go on while the error contracts by
        at least this factor per sweep (Sinkhorn is then cheaper than Newton).
    sparsity : {"mass", "topk"}
        Rule that picks the kept plan entries of the Hessian. ``"mass"`` drops
        the smallest entries while their total mass stays below
        ``min(max_drop * mass, mass_ratio * ||grad||_1)``; ``"topk"`` keeps
        about ``density * n * m`` entries (the paper's rule).
    mass_ratio : float
        Dropped mass allowed per unit of the L1 marginal error (``"mass"``).
    max_drop : float
        Largest dropped mass, relative to the total mass (``"mass"``).
    density : float or None
        Kept fraction of the plan for ``"topk"``; None means
        ``3 / min(n, m)`` (the paper's lambda = 2/n of the Hessian).
    max_density : float
        Cap on the kept fraction of the plan, whatever the rule.
    cg_rtol : float
        Largest relative residual of conjugate gradient (inexact Newton: the
        tolerance shrinks with the gradient norm down to ``cg_rtol_min``).
    cg_rtol_min : float
        Smallest relative CG residual asked for.
    cg_maxiter : int
        Conjugate gradient iterations per Newton step.
    shift : float
        Levenberg-Marquardt shift of the Hessian, times the largest gradient
        entry; it removes the singular direction and damps far-away steps.
    ls_c1 : float
        Armijo sufficient-increase constant of the line search.
    ls_beta : float
        Step shrink factor of the backtracking line search.
    ls_maxiter : int
        Backtracking steps before the Newton step is given up.
    fallback_sweeps : int
        Sinkhorn sweeps run when a Newton step fails.
    patience : int
        Newton steps without progress on the error before the solver stops
        with a warning (precision floor reached, e.g. in float32).
    bin_width : float
        Width, in log-plan units, of the histogram used to pick thresholds.
    n_bins : int
        Number of histogram bins; entries below ``exp(-bin_width*n_bins)``
        times the largest weight are never kept.
    """

    n_sinkhorn: int = 20
    sinkhorn_rate: float = 0.25
    sparsity: str = "mass"
    mass_ratio: float = 1.0
    max_drop: float = 0.1
    density: object = None
    max_density: float = 0.25
    cg_rtol: float = 0.1
    cg_rtol_min: float = 1e-10
    cg_maxiter: int = 500
    shift: float = 1e-3
    ls_c1: float = 1e-4
    ls_beta: float = 0.5
    ls_maxiter: int = 30
    fallback_sweeps: int = 10
    patience: int = 15
    bin_width: float = 0.5
    n_bins: int = 120

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, kwargs):
        """Build options from ``**kwargs``; unknown names raise ``TypeError``."""
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(
                "sinkhorn_newton_sparse got unknown option(s) %s; valid SNS options "
                "are: %s" % (", ".join(map(repr, unknown)), ", ".join(cls.names()))
            )
        opts = cls(**kwargs)
        opts.check()
        return opts

    def check(self):
        """Raise ``ValueError`` naming the first option out of its range."""
        def need(cond, name, what):
            if not cond:
                raise ValueError(
                    "SNS option %r must be %s, got %r" % (name, what, getattr(self, name))
                )

        def is_int(x):
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x

        for name in ("n_sinkhorn", "fallback_sweeps"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 0, name,
                 "an integer >= 0")
        for name in ("cg_maxiter", "ls_maxiter", "patience", "n_bins"):
            need(is_int(getattr(self, name)) and getattr(self, name) >= 1, name,
                 "an integer >= 1")
        need(self.sparsity in ("mass", "topk"), "sparsity", "'mass' or 'topk'")
        for name in ("sinkhorn_rate", "ls_c1", "ls_beta", "cg_rtol", "cg_rtol_min"):
            x = getattr(self, name)
            need(is_num(x) and 0 < x < 1, name, "a number in (0, 1)")
        for name in ("mass_ratio", "bin_width"):
            x = getattr(self, name)
            need(is_num(x) and x > 0, name, "a number > 0")
        for name in ("max_drop", "shift"):
            x = getattr(self, name)
            need(is_num(x) and x >= 0, name, "a number >= 0")
        need(is_num(self.max_density) and 0 < self.max_density <= 1, "max_density",
             "a number in (0, 1]")
        need(self.density is None or (is_num(self.density) and 0 < self.density <= 1),
             "density", "None or a number in (0, 1]")
