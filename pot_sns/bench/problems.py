"""Benchmark problems: the public suite (costs normalised to max 1)."""

import functools
import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    """One entropic OT instance of the suite.

    Attributes
    ----------
    name : str
        Problem family (a key of :data:`FAMILIES`).
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


#: images of scikit-learn's handwritten digits are 8 by 8 pixels
DIGITS_SIDE = 8
#: floor of every pixel's weight, relative to the brightest pixel: see :func:`digits`
DIGITS_FLOOR = 1e-6


@functools.lru_cache(maxsize=1)
def _digit_images():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits problems need scikit-learn, which is not installed: "
                          'pip install "pot_sns[bench]" (or pip install scikit-learn)') from exc
    return load_digits().images  # (1797, 8, 8), grey levels 0 to 16, shipped with sklearn


def digit_histogram(image, side):
    """An 8-by-8 digit upsampled to ``side`` by ``side`` pixels by bilinear
    interpolation (non-negative: a convex combination of pixels), with the
    floor :data:`DIGITS_FLOOR`, normalised to mass 1 (row-major pixels)."""
    from scipy import ndimage

    img = ndimage.zoom(np.asarray(image, dtype=np.float64), side / DIGITS_SIDE, order=1)
    h = np.clip(img, 0.0, None).ravel()
    h = h / h.sum()
    h = h + DIGITS_FLOOR * h.max()
    return h / h.sum()


def pixel_grid(side):
    """Pixel centres of a ``side`` by ``side`` image, row-major, shape (side**2, 2)."""
    i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    return np.stack([i.ravel(), j.ravel()], axis=1).astype(np.float64)


def digits(n, power, seed=0):
    """Two handwritten digits as histograms on the pixel grid.

    Two distinct images of scikit-learn's ``load_digits`` (drawn by
    ``seed``), upsampled from 8 by 8 to ``side`` by ``side`` pixels with
    ``n = side**2`` (default 28 by 28, the size of MNIST, as in the paper's
    image experiments), cost the Euclidean distance between pixel centres
    (``power=1``, W1) or its square (``power=2``, W2), normalised to max 1.

    Like real images, the digits leave many pixels (near) empty. Exact zeros
    break POT's kernel-domain ``sinkhorn`` and ``sinkhorn_stabilized`` and
    regot's SSNS (division by zero, non-finite plans), so every pixel gets a
    floor of 1e-6 times the brightest pixel's weight (:data:`DIGITS_FLOOR`):
    21% and 31% of the pixels of the two default 28 by 28 digits carry only
    that.
    """
    side = square_side(n)
    rng = np.random.default_rng(seed)
    images = _digit_images()
    i, j = rng.choice(len(images), size=2, replace=False)
    a, b = digit_histogram(images[i], side), digit_histogram(images[j], side)
    x = pixel_grid(side)
    M = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)) ** power
    M /= M.max()
    return a, b, M


def square_side(n):
    """``side`` with ``side**2 == n``, for the image problems."""
    side = int(round(math.sqrt(n)))
    if side * side != n or side < 2:
        raise ValueError("the digits problems are square images: n must be a square >= 4 "
                         "(256 for 16x16, 784 for 28x28), got %r" % n)
    return side


FAMILIES = {
    "assignment": (lambda n, seed: assignment(n, seed), 500),
    "gaussmix": (lambda n, seed: gaussmix(n, seed), 1000),
    "grid1d_w1": (lambda n, seed: grid1d(n, 1, seed), 1000),
    "grid1d_w2": (lambda n, seed: grid1d(n, 2, seed), 1000),
    "digits_w1": (lambda n, seed: digits(n, 1, seed), 784),
    "digits_w2": (lambda n, seed: digits(n, 2, seed), 784),
    "gauss": (lambda n, seed: gauss(n, seed), 1000),
}
#: the public suite, run by default
SUITE = ["assignment", "gaussmix", "grid1d_w1", "grid1d_w2", "digits_w1", "digits_w2"]
#: the image problems: their size is a square
IMAGES = ("digits_w1", "digits_w2")
PAPER_REG = 1.0 / 1200


def available(name):
    """``(True, "")`` when problem ``name`` can be built here, else
    ``(False, reason)`` (the digits need scikit-learn)."""
    if name in IMAGES:
        try:
            _digit_images()
        except ImportError as exc:
            return False, str(exc)
    return True, ""


def check_size(name, n):
    """Raise ``ValueError`` when ``n`` is not a valid size of problem ``name``."""
    if n is None:
        return
    if n < 2:
        raise ValueError("n must be >= 2, got %r" % n)
    if name in IMAGES:
        square_side(n)


def make(name, n=None, reg=1e-3, seed=0):
    """Build the problem ``name`` of size ``n`` (the family's default when None).

    Raises
    ------
    ValueError
        For an unknown name or a size the family does not have.
    ImportError
        For the digits without scikit-learn.
    """
    if name not in FAMILIES:
        raise ValueError("problems: unknown problem %r; choose among %s"
                         % (name, ", ".join(FAMILIES)))
    build, n0 = FAMILIES[name]
    n = n0 if n is None else int(n)
    check_size(name, n)
    a, b, M = build(n, seed)
    return Problem(name, a, b, M, float(reg))
