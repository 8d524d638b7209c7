"""Tuning options of the SNS solver, parsed and checked from keyword arguments."""

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np


def _is_int(x):
    # numbers.Integral admits NumPy integers (np.int64 from arithmetic on
    # arrays); bool is an Integral too, but True as an iteration count is a bug
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _is_real(x):
    if not isinstance(x, numbers.Real) or isinstance(x, (bool, np.bool_)):
        return False
    try:
        return not math.isnan(float(x))
    except OverflowError:  # an int beyond the float range
        return False


#: What each option accepts: ``(names, kind, test, expected)``. ``kind`` says
#: the type and the Python type the value is stored as ("int", "real",
#: "real-or-None", "bool", "str"); ``test`` the range, on a value of that
#: kind. Infinity is accepted only where it means "no limit".
_RULES = (
    (("eps_scaling",), "bool", lambda x: True, "True or False"),
    (("n_sinkhorn", "fallback_sweeps"), "int", lambda x: x >= 0, "an integer >= 0"),
    (("scaling_sweeps", "cg_maxiter", "ls_maxiter", "patience", "n_bins"), "int",
     lambda x: x >= 1, "an integer >= 1"),
    (("sparsity",), "str", lambda x: x in ("mass", "topk"), "'mass' or 'topk'"),
    (("scaling_start", "bin_width"), "real", lambda x: 0 < x and math.isfinite(x),
     "a finite number > 0"),
    (("scaling_from", "mass_ratio"), "real", lambda x: x > 0, "a number > 0"),
    (("scaling_factor",), "real", lambda x: 1 < x and math.isfinite(x), "a finite number > 1"),
    (("sinkhorn_rate", "ls_c1", "ls_beta", "cg_rtol", "cg_rtol_min"), "real",
     lambda x: 0 < x < 1, "a number in (0, 1)"),
    (("max_drop",), "real", lambda x: x >= 0, "a number >= 0"),
    (("shift",), "real", lambda x: 0 <= x and math.isfinite(x), "a finite number >= 0"),
    (("density", "max_density"), "real-or-None", lambda x: 0 < x <= 1,
     "None or a number in (0, 1]"),
)

_KINDS = {
    # kind: (type test, conversion to the stored Python type)
    "int": (_is_int, int),
    "real": (_is_real, float),
    "real-or-None": (lambda x: x is None or _is_real(x),
                     lambda x: None if x is None else float(x)),
    "bool": (lambda x: isinstance(x, (bool, np.bool_)), bool),
    "str": (lambda x: isinstance(x, str), str),
}


@dataclass(frozen=True)
class SNSOptions:
    """Keyword-only options of :func:`pot_sns.sinkhorn_newton_sparse`.

    Parameters
    ----------
    n_sinkhorn : int
        Log-domain Sinkhorn sweeps at the target ``reg`` before the first
        Newton step (the paper's N1). Skipped when a ``warmstart`` is given.
    eps_scaling : bool
        Warm up with epsilon scaling: ``scaling_sweeps`` Sinkhorn sweeps at
        each regularisation of a decreasing sequence, from ``scaling_start``
        times the spread of the costs down to ``reg``, each starting from the
        previous potentials. Newton far from the optimum at a small ``reg``
        needs many damped steps; from the scaled warm-up it converges in a
        few. Skipped with a ``warmstart`` and when ``reg`` is at least
        ``scaling_from`` times the spread of the costs.
        ``eps_scaling=False, n_sinkhorn=20`` is the paper's Algorithm 1.
    scaling_from : float
        Largest ``reg``, relative to ``max(M) - min(M)``, that gets the
        epsilon scaling. Above, Sinkhorn at ``reg`` itself converges in a few
        hundred sweeps at most and the scaling's stages (each a pass of
        ``exp`` over ``M``) cost more than they save (measured on the
        benchmark's problems: the crossover lies between 3e-3 and 5e-3).
    scaling_start : float
        First regularisation of the scaling, relative to ``max(M) - min(M)``.
    scaling_factor : float
        Ratio of two successive regularisations of the scaling.
    scaling_sweeps : int
        Sinkhorn sweeps at each regularisation of the scaling.
    sinkhorn_rate : float
        After the warm-up, Sinkhorn sweeps go on while the error contracts by
        at least this factor per sweep (Sinkhorn is then cheaper than Newton:
        with the numpy kernel a sweep costs two BLAS mat-vecs).
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
    max_density : float or None
        Cap on the kept fraction of the plan, whatever the rule. None means
        the kernel's own cap: 1 for numpy and torch (past their
        ``dense_density`` they keep the kept entries in the plan buffer, or
        numpy in its float32 copy: dense mat-vecs cost less than with a
        sparse copy), 0.25 for kernels that copy every kept entry into a
        sparse matrix (cupy, the dense fallback).
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

    Raises
    ------
    ValueError
        An option out of its range or of the wrong type (a float or a bool
        for an integer option, NaN, a string for a number), naming the
        option. The options are checked when they are built, so an
        ``SNSOptions`` always holds valid values.

    Notes
    -----
    Integer options accept any integer (``numbers.Integral``: Python
    ``int``, ``np.int64``, ...), real options any real number
    (``numbers.Real``: ``np.float32``, ``np.float64``, integers, ...); bools
    are refused where a number is expected. The values are stored as Python
    ``int``, ``float`` and ``bool``, whatever the caller passed.

    Examples
    --------
    The options are passed as keyword arguments of the solvers:

    >>> import numpy as np
    >>> import pot_sns
    >>> M = [[0., 1.], [1., 0.]]
    >>> P = pot_sns.sinkhorn_newton_sparse([], [], M, 1e-2, n_sinkhorn=5)
    >>> pot_sns.SNSOptions(sparsity="topk").sparsity
    'topk'
    >>> opts = pot_sns.SNSOptions(cg_maxiter=np.int64(50), cg_rtol=np.float32(0.25))
    >>> opts.cg_maxiter, type(opts.cg_maxiter).__name__, opts.cg_rtol
    (50, 'int', 0.25)
    """

    n_sinkhorn: int = 20
    eps_scaling: bool = True
    scaling_from: float = 5e-3
    scaling_start: float = 0.1
    scaling_factor: float = 4.0
    scaling_sweeps: int = 10
    sinkhorn_rate: float = 0.9
    sparsity: str = "mass"
    mass_ratio: float = 1.0
    max_drop: float = 0.1
    density: object = None
    max_density: object = None
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
        """Names of all the options.

        Returns
        -------
        names : list of str
            Field names, in the order of the class definition.

        Examples
        --------
        >>> from pot_sns import SNSOptions
        >>> SNSOptions.names()[0]
        'n_sinkhorn'
        """
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, kwargs):
        """Build options from ``**kwargs``; unknown names raise ``TypeError``.

        Parameters
        ----------
        kwargs : dict
            Option names and values, as passed to the solver.

        Returns
        -------
        opts : SNSOptions
            The checked options, numbers as Python ``int`` and ``float``
            (see :meth:`check`).

        Examples
        --------
        >>> from pot_sns import SNSOptions
        >>> import numpy as np
        >>> SNSOptions.from_kwargs({"cg_maxiter": np.int64(50)}).cg_maxiter
        50
        """
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(
                "sinkhorn_newton_sparse got unknown option(s) %s; valid SNS options "
                "are: %s" % (", ".join(map(repr, unknown)), ", ".join(cls.names()))
            )
        return cls(**kwargs)  # checked and normalised by __post_init__

    def __post_init__(self):
        self.check()
        # numpy scalars become Python numbers: the solver's arithmetic on them
        # is then Python's, and the options print and compare as given
        for names, kind, _, _ in _RULES:
            convert = _KINDS[kind][1]
            for name in names:
                object.__setattr__(self, name, convert(getattr(self, name)))

    def check(self):
        """Raise ``ValueError`` naming the first option out of its range or
        of the wrong type (run when the options are built).

        Examples
        --------
        >>> from pot_sns import SNSOptions
        >>> SNSOptions(ls_beta=2.0)
        Traceback (most recent call last):
            ...
        ValueError: SNS option 'ls_beta' must be a number in (0, 1), got 2.0
        >>> SNSOptions(cg_maxiter=True)
        Traceback (most recent call last):
            ...
        ValueError: SNS option 'cg_maxiter' must be an integer >= 1, got True
        """
        for names, kind, test, expected in _RULES:
            is_kind = _KINDS[kind][0]
            for name in names:
                x = getattr(self, name)
                # the type first: the range test needs a number (or a str)
                if not (is_kind(x) and (x is None or test(x))):
                    raise ValueError("SNS option %r must be %s, got %r" % (name, expected, x))
