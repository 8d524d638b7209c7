"""Benchmark problems: the public suite (costs normalised to max 1)."""

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    """One entropic OT instance of the suite.

    Attributes
    ----------
    name : str
        Problem family (``assignment``, ``gaussmix``, ``grid1d_w1``, ``grid1d_w2``).
    a, b : ndarray, shapes (n,), (m,)
        Weights (float64, positive, equal mass).
    M : ndarray, shape (n, m)
        Cost, normalised to max 1.
    reg : float
        Entropic regularisation.
    """

    name: str
    a: np.ndarray
    b: np.ndarray
    M: np.ndarray
    reg: float

    @property
    def shape(self):
        return self.M.shape

    @property
    def label(self):
        return "%s n=%d reg=%s" % (self.name, self.M.shape[0], format_reg(self.reg))


def format_reg(reg):
    """``1e-03`` for decimal values, ``1/1200`` for the paper's assignment case."""
    inv = 1.0 / reg
    mant = reg / 10.0 ** math.floor(math.log10(reg))
    decimal = abs(mant - round(mant)) < 1e-9 * mant
    if not decimal and inv > 1 and abs(inv - round(inv)) < 1e-9 * inv:
        return "1/%d" % round(inv)
    return "%.0e" % reg if decimal else "%.3g" % reg


def _gaussian_mixture(rng, n, centers, scales, weights):
    k = rng.choice(len(centers), size=n, p=np.asarray(weights) / np.sum(weights))
    return np.asarray(centers)[k] + rng.normal(size=(n, 2)) * np.asarray(scales)[k, None]


def assignment(n, seed=0):
    """The paper's random assignment: i.i.d. U[0, 1] costs, uniform weights."""
    rng = np.random.default_rng(seed)
    M = rng.random((n, n))
    M /= M.max()
    return np.full(n, 1.0 / n), np.full(n, 1.0 / n), M


def gaussmix(n, seed=0):
    """2-D Gaussian-mixture point clouds, squared Euclidean cost (W2)."""
    rng = np.random.default_rng(seed)
    x = _gaussian_mixture(rng, n, [(0, 0), (3, 1), (1, 3)], [0.6, 0.8, 0.5], [0.5, 0.3, 0.2])
    y = _gaussian_mixture(rng, n, [(1, 1), (4, 3), (0, 4)], [0.7, 0.5, 0.6], [0.3, 0.4, 0.3])
    M = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    M /= M.max()
    return np.full(n, 1.0 / n), np.full(n, 1.0 / n), M


def gauss(n, seed=0):
    """Two 2-D Gaussian clouds, ``N(0, I)`` and ``N(0.5, I)``, squared
    Euclidean cost (the solver core's acceptance case)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(n, 2)) + 0.5
    M = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    M /= M.max()
    return np.full(n, 1.0 / n), np.full(n, 1.0 / n), M


def _density_1d(x, parts):
    d = np.zeros_like(x)
    for w, mu, s in parts:
        d += w * np.exp(-0.5 * ((x - mu) / s) ** 2) / s
    d += 0.02  # full support: every solver sees positive weights
    return d / d.sum()


def grid1d(n, power, seed=0):
    """1-D densities on a regular grid of [0, 1], cost ``|x - y|**power``."""
    x = np.linspace(0.0, 1.0, n)
    a = _density_1d(x, [(1.0, 0.25, 0.08), (0.6, 0.65, 0.05)])
    b = _density_1d(x, [(0.8, 0.4, 0.1), (0.7, 0.8, 0.06)])
    M = np.abs(x[:, None] - x[None, :]) ** power
    M /= M.max()
    return a, b, M


FAMILIES = {
    "assignment": (lambda n, seed: assignment(n, seed), 500),
    "gaussmix": (lambda n, seed: gaussmix(n, seed), 1000),
    "grid1d_w1": (lambda n, seed: grid1d(n, 1, seed), 1000),
    "grid1d_w2": (lambda n, seed: grid1d(n, 2, seed), 1000),
    "gauss": (lambda n, seed: gauss(n, seed), 1000),
}
#: the public suite, run by default
SUITE = ["assignment", "gaussmix", "grid1d_w1", "grid1d_w2"]
PAPER_REG = 1.0 / 1200


def make(name, n=None, reg=1e-3, seed=0):
    """Build the problem ``name`` of size ``n`` (the family's default when None)."""
    if name not in FAMILIES:
        raise ValueError("problems: unknown problem %r; choose among %s"
                         % (name, ", ".join(FAMILIES)))
    build, n0 = FAMILIES[name]
    n = n0 if n is None else int(n)
    if n < 2:
        raise ValueError("n must be >= 2, got %r" % n)
    a, b, M = build(n, seed)
    return Problem(name, a, b, M, float(reg))
