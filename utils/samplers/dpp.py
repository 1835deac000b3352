"""k-DPP sampling over BADGE's gradient embeddings: the toolkit's BaselineSampling (BADGE's
"k-DPP" baseline; Ash et al., ICLR'20), by the swap (exchange) Metropolis chain on k-subsets
(Kang, NeurIPS'13; Anari et al., COLT'16).

The kernel is the linear one on the gradient embeddings g_i = (p_i - onehot(argmax p_i)) (x) h_i,
K_ij = <g_i, g_j> = <a_i, a_j> <h_i, h_j> with a = p - onehot. Neither g nor an N x N kernel is
formed: the chain keeps the k x k inverse of the current set's kernel (built from the factors),
and a proposal's determinant ratio is a Schur complement, one k-vector of kernel values (O(k (C + D)))
and one k x k mat-vec. Memory O(N (C + D) + k^2).
"""

import functools
import math

import numpy as np
import torch

from utils.samplers.registry import QueryContext, register_selector

RESIDUAL_TOL = 1e-9  # a point whose squared distance to the span of the set is below this share of its norm is in it
REFRESH = 1  # recompute the inverse from the factors every REFRESH * k accepted swaps (rounding drift)


def gradient_factors(probs: torch.Tensor, emb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(a, h) in float64 numpy: a = p - onehot(argmax p) ``[N, C]`` and h = the embeddings ``[N, D]``,
    so that g_i = a_i (x) h_i is BADGE's gradient embedding (up to its sign)."""
    a = probs.detach().cpu().numpy().astype(np.float64)
    a[np.arange(len(a)), a.argmax(1)] -= 1.0
    return a, emb.detach().cpu().numpy().astype(np.float64)


class SwapChain:
    """The state of the exchange chain: the set ``members`` (k positions), its factor rows and the
    inverse ``inverse`` of its kernel K_S = (A_S A_S^T) * (H_S H_S^T)."""

    def __init__(self, a: np.ndarray, h: np.ndarray, members: np.ndarray):
        self.a, self.h = a, h
        self.diag = np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", h, h)  # K_ii
        self.members = np.array(members, dtype=np.int64)
        self.in_set = np.zeros(len(a), dtype=bool)
        self.in_set[self.members] = True
        self.refresh()

    def refresh(self) -> None:
        """The factor rows of the set and the inverse of its kernel, from scratch."""
        self.a_set, self.h_set = self.a[self.members], self.h[self.members]
        self.inverse = np.linalg.inv((self.a_set @ self.a_set.T) * (self.h_set @ self.h_set.T))
        self.accepted = 0

    def column(self, v: int) -> np.ndarray:
        """K[S, v] from the factors."""
        return (self.a_set @ self.a[v]) * (self.h_set @ self.h[v])

    def ratio(self, r: int, v: int) -> tuple[float, np.ndarray, np.ndarray]:
        """det K_{S - s_r + v} / det K_S for swapping the r-th member for ``v``, with w = K[S, v] and
        z = M w (M = K_S^-1) for :meth:`swap`. Both sets share Y = S - s_r: the ratio is the Schur
        complement of v over Y divided by that of s_r, 1 / Schur(s_r) = M_rr and
        Schur(v) = K_vv - w.z + z_r^2 / M_rr. Zero when v lies (numerically) in the span of Y."""
        w = self.column(v)
        z = self.inverse @ w
        m_rr = self.inverse[r, r]
        schur = self.diag[v] - w @ z + z[r] ** 2 / m_rr
        if schur <= RESIDUAL_TOL * self.diag[v]:
            return 0.0, w, z
        return float(schur * m_rr), w, z

    def swap(self, r: int, v: int, w: np.ndarray, z: np.ndarray) -> None:
        """Replace the r-th member by ``v`` (w, z from :meth:`ratio`), O(k^2) in place: with e = M e_r,
        K_Y^-1 = M - e e^T / e_r (row and column r zero), g = K_Y^-1 b = z - (z_r / e_r) e for b = w
        without its r-th entry, d = K_vv - b.g, and the bordered inverse
        M' = K_Y^-1 + g g^T / d with column and row r = -g / d and M'_rr = 1 / d."""
        from scipy.linalg.blas import dger

        m = self.inverse
        e = m[:, r].copy()
        g = z - (z[r] / e[r]) * e
        b = w.copy()
        b[r] = 0.0
        d = self.diag[v] - b @ g
        dger(-1.0 / e[r], e, e, a=m.T, overwrite_a=True)  # m is symmetric: m.T is its Fortran-ordered view
        dger(1.0 / d, g, g, a=m.T, overwrite_a=True)
        m[:, r] = -g / d
        m[r, :] = -g / d
        m[r, r] = 1.0 / d
        self.in_set[self.members[r]] = False
        self.in_set[v] = True
        self.members[r] = v
        self.a_set[r], self.h_set[r] = self.a[v], self.h[v]
        self.accepted += 1
        if self.accepted >= REFRESH * len(self.members):
            self.refresh()


def independent_start(a: np.ndarray, h: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to k positions with a positive-determinant kernel: the points in a random order, each kept
    when it is not in the span of those kept (residual above RESIDUAL_TOL of its norm), by an
    incremental Cholesky factor. For points in general position these are the first k of a random
    permutation, a uniform random k-set (the toolkit's start); fewer than k when the embeddings span
    fewer than k dimensions."""
    diag = np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", h, h)
    order = rng.permutation(len(a))
    order = order[diag[order] > 0]
    kept = []
    factor = np.zeros((0, 0))  # rows of L^-1 for the kept points' kernel L L^T, grown one row at a time
    block = max(64, 4 * k)
    for start in range(0, len(order), block):
        rows = order[start:start + block]
        cross = (a[rows] @ a[kept].T) * (h[rows] @ h[kept].T) if kept else np.zeros((len(rows), 0))
        proj = cross @ factor.T  # [B, |kept|]: coordinates in the orthonormalised kept span
        residual = diag[rows] - np.einsum("ij,ij->i", proj, proj)
        for j in np.flatnonzero(residual > RESIDUAL_TOL * diag[rows]):  # only those not already in the span
            v = rows[j]
            w = (a[kept] @ a[v]) * (h[kept] @ h[v]) if kept else np.zeros(0)
            y = factor @ w
            res = diag[v] - y @ y
            if res <= RESIDUAL_TOL * diag[v]:
                continue
            ell = math.sqrt(res)
            new = np.zeros((len(kept) + 1, len(kept) + 1))
            new[:-1, :-1] = factor
            new[-1, :-1] = -(y @ factor) / ell
            new[-1, -1] = 1.0 / ell
            factor = new
            kept.append(int(v))
            if len(kept) == k:
                return np.array(kept, dtype=np.int64)
    return np.array(kept, dtype=np.int64)


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def kdpp_iterations(k: int) -> int:
    """The toolkit's chain length: swap proposals for i = 1 .. int(5 k ln k) - 1."""
    return max(0, int(5 * k * math.log(k)) - 1) if k > 1 else 0


def kdpp_select(probs: torch.Tensor, emb: torch.Tensor, k: int, rng: np.random.Generator,
                iterations: int | None = None) -> np.ndarray:
    """k positions from the k-DPP with kernel K_ij = <a_i, a_j> <h_i, h_j> (BADGE's gradient
    embeddings), by the Metropolis exchange chain: from a positive-determinant start, propose a
    uniform member u and a uniform non-member v, and swap with probability
    min(1, det K_{S-u+v} / det K_S) (``iterations`` proposals, default kdpp_iterations(k)).
    When the embeddings span fewer than k dimensions every k-set has determinant 0: the
    independent points found, then uniform others, and no chain."""
    n = len(probs)
    if k > n:
        raise ValueError(f"cannot pick {k} points from {n}")
    if k == n or k == 0:
        return np.arange(k)
    a, h = gradient_factors(probs, emb)
    start = independent_start(a, h, k, rng)
    if len(start) < k:
        rest = rng.permutation(np.setdiff1d(np.arange(n), start))[: k - len(start)]
        return np.concatenate([start, rest])
    iterations = kdpp_iterations(k) if iterations is None else iterations
    members, outside_at, uniforms = rng.integers(k, size=iterations), rng.integers(n - k, size=iterations), \
        rng.random(iterations)
    with _blas_controller().limit(limits=1, user_api="blas"):  # k-vector BLAS calls: one thread is fastest
        chain = SwapChain(a, h, start)
        outside = np.flatnonzero(~chain.in_set)  # the non-members, in any order: v = outside[j] is uniform
        for r, j, u in zip(members.tolist(), outside_at.tolist(), uniforms.tolist()):
            v = int(outside[j])
            ratio, w, z = chain.ratio(r, v)
            if u < ratio:  # strict: a zero-determinant set is never entered
                outside[j] = chain.members[r]
                chain.swap(r, v, w, z)
    return chain.members.copy()


@register_selector("BaselineSampling", aliases=("baseline", "kdpp", "k_dpp", "dpp"))
def kdpp_positions(ctx: QueryContext) -> np.ndarray:
    """The toolkit's BaselineSampling: a k-DPP (k = the query size) over the candidates' gradient
    embeddings, from the eval-mode softmax and penultimate features."""
    return kdpp_select(ctx.probs(), ctx.features(), ctx.query_size, ctx.rng)
