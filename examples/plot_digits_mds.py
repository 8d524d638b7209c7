"""
Distance matrix of handwritten digits and a 2-D map of it
=========================================================

:func:`pot_sns.pairwise` computes the entropic Wasserstein cost between every
pair of a collection of histograms: here 80 handwritten digits (8 of each
class) from scikit-learn, each an 8x8 image read as a histogram on the pixel
grid, with the squared Euclidean distance between pixels as the cost. That
is 3,240 OT problems at ``reg = 1e-2``, where Sinkhorn needs thousands of
sweeps and SNS a few dozen iterations. A 2-D embedding of the distance
matrix by multidimensional scaling (MDS) then shows which digits
optimal transport finds alike.

The same call scales to thousands of images: pass a ``dask.distributed``
``client`` to spread the problems over a cluster and a ``checkpoint``
directory to resume an interrupted job (see :doc:`/batch`).
"""

# sphinx_gallery_thumbnail_number = 2

import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
import ot
from sklearn.datasets import load_digits
from sklearn.manifold import MDS

import pot_sns

##############################################################################
# Digits as histograms
# --------------------
# Eight images of each digit. A digit image is mostly empty: those pixels
# are zero weights, which SNS handles exactly (the problem is solved on the
# support of the two histograms).

digits = load_digits()
idx = np.concatenate([np.flatnonzero(digits.target == c)[:8] for c in range(10)])
labels = digits.target[idx]
H = digits.images[idx].reshape(len(idx), -1)
H = H / H.sum(axis=1, keepdims=True)

side = digits.images.shape[1]
pixels = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1)
pixels = pixels.reshape(-1, 2).astype(float)
M = ot.dist(pixels, pixels)  # squared Euclidean: W2^2 on the grid
M /= M.max()
print("%d histograms of %d pixels, %.0f%% of the weights are zero"
      % (H.shape[0], H.shape[1], 100 * np.mean(H == 0)))

##############################################################################
# All pairs at once
# -----------------
# ``H`` against itself: the cost is symmetric, so each unordered pair is
# solved once, the diagonal included (at ``reg > 0`` the entropic plan of a
# histogram with itself is not the identity, and its cost is not 0).
# ``D[i, j]`` is exactly ``ot.solve(M, H[i], H[j], reg=1e-2,
# method="sns").value_linear``.

start = time.perf_counter()
D, log = pot_sns.pairwise(H, M=M, reg=1e-2, log=True)
elapsed = time.perf_counter() - start
print("%d problems in %.1f s (%.0f problems/s), %d converged"
      % (log["n_pairs"], elapsed, log["n_pairs"] / elapsed,
         np.sum(log["status"][np.triu_indices(len(H))] == "converged")))

##############################################################################
# The diagonal measures the entropic blur of each image. Subtracting it
# gives the debiased cost (as in the Sinkhorn divergence), 0 on the
# diagonal, which we use as a squared distance.

S = D - 0.5 * (np.diag(D)[:, None] + np.diag(D)[None, :])
dist = np.sqrt(np.maximum(S, 0))

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
im = axes[0].imshow(D, cmap="viridis")
axes[0].set_title("<M, P*> between the 80 digits")
fig.colorbar(im, ax=axes[0], fraction=0.046)
im = axes[1].imshow(dist, cmap="viridis")
axes[1].set_title("debiased distance")
fig.colorbar(im, ax=axes[1], fraction=0.046)
for ax in axes:
    ticks = np.arange(4, len(idx), 8)
    ax.set_xticks(ticks, [str(c) for c in range(10)])
    ax.set_yticks(ticks, [str(c) for c in range(10)])
fig.tight_layout()

##############################################################################
# A 2-D map of the digits
# -----------------------
# Metric MDS places the digits in the plane so that their Euclidean
# distances match the OT distances as well as possible. Digits of one class
# gather; classes drawn with similar strokes (1 and 7, 3 and 9) sit side by
# side.

if "metric_mds" in inspect.signature(MDS).parameters:  # scikit-learn >= 1.8
    mds = MDS(n_components=2, metric="precomputed", init="classical_mds", random_state=0)
else:
    mds = MDS(n_components=2, dissimilarity="precomputed", random_state=0)
Y = mds.fit_transform(dist)

fig, ax = plt.subplots(figsize=(6.5, 6))
for c in range(10):
    sel = labels == c
    # each digit drawn as its label, in the colour of its class
    for y in Y[sel]:
        ax.text(y[0], y[1], str(c), color="C%d" % c, fontsize=11, weight="bold",
                ha="center", va="center")
pad = 0.05 * np.ptp(Y, axis=0)
ax.set_xlim(Y[:, 0].min() - pad[0], Y[:, 0].max() + pad[0])
ax.set_ylim(Y[:, 1].min() - pad[1], Y[:, 1].max() + pad[1])
ax.set_title("MDS of the entropic W2 distances (reg = 1e-2)")
ax.set_aspect("equal")
fig.tight_layout()
plt.show()
