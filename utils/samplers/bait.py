"""BAIT (Ash, Goel, Krishnamurthy & Kakade, "Gone Fishing: Neural Active Learning with Fisher
Embeddings", NeurIPS 2021, Alg. 1): choose the batch S minimising tr((lambda I + sum_{x in L u S}
I(x))^{-1} F), F the mean Fisher information of the last layer over all samples, greedily: add
2k points (forward), then remove k of them (backward), each step a rank-C Woodbury update.

The last-layer Fisher of a point with softmax p and penultimate feature h is
I(x) = (diag p - p p^T) (x) h h^T = V V^T with V = B^T (x) h, B[y, c] = sqrt(p_y) (delta_yc - p_c)
(the reference's "expected gradient embeddings", one column per assumed label y). Nothing of size
N x C*D is formed: every quantity a step needs for a point is a C x C matrix,

    S_x = V_x^T P V_x,  T_x = V_x^T P F P V_x   (P = the current inverse),
    gain_x = tr(T_x (I + S_x)^{-1}),  the decrease of the objective when x is added,

kept for all candidates and updated after each step from two [N, D] x [D, C^2] products (the new
point's columns P V and P F P V against every h); the C*D x C*D matrices P and F are formed once
(one inverse) and P gets rank-C updates. Weights as the authors' code: the labeled
Fisher enters with weight 1/(|L| + k) per point, a chosen point with k/(|L| + k).
"""

import math

import torch

from utils.core.config import Key
from utils.samplers.diversity import CHUNK_ELEMENTS
from utils.samplers.registry import QueryContext, register_selector


def labeled_probs(ctx: QueryContext) -> torch.Tensor:
    """Softmax outputs of the labeled set, [L, C] on the CPU."""
    if len(ctx.labeled_idx) == 0:
        return ctx.probs()[:0].cpu()
    return ctx.predict(lambda out, _y: torch.softmax(out.logits.float(), 1), ctx.labeled_idx).cpu()


def fisher_factors(probs: torch.Tensor) -> torch.Tensor:
    """B [N, C, C] with B[n, y, c] = sqrt(p_y) (delta_yc - p_c): I(x) = (B^T B) (x) h h^T."""
    probs = probs.double()
    eye = torch.eye(probs.shape[1], dtype=probs.dtype)
    return probs.sqrt()[:, :, None] * (eye[None] - probs[:, None, :])


def fisher_sum(probs: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """sum_x (diag p_x - p_x p_x^T) (x) h_x h_x^T, [C*D, C*D] in emb's dtype, one D x D block per class
    pair (H^T diag(w) H, the upper blocks computed)."""
    classes, dim = probs.shape[1], emb.shape[1]
    probs = probs.to(emb.dtype)
    total = torch.zeros(classes * dim, classes * dim, dtype=emb.dtype)
    for c in range(classes):
        for c2 in range(c, classes):
            weight = probs[:, c] * (float(c == c2) - probs[:, c2])
            block = (emb * weight[:, None]).T @ emb
            total[c * dim:(c + 1) * dim, c2 * dim:(c2 + 1) * dim] = block
            total[c2 * dim:(c2 + 1) * dim, c * dim:(c + 1) * dim] = block.T
    return total


def quadratic_forms(emb: torch.Tensor, q: torch.Tensor, classes: int,
                    chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """h_n^T Q_{cc'} h_n for every point and class pair, [N, C, C] float64, Q symmetric [C*D, C*D] in
    D x D blocks; blocks of points hold chunk_elements numbers (in emb's dtype)."""
    n, dim = emb.shape
    q = q.to(emb.dtype)
    out = torch.empty(n, classes, classes, dtype=torch.float64)
    rows = max(1, chunk_elements // (classes * dim))
    for start in range(0, n, rows):
        h = emb[start:start + rows]
        for c in range(classes):
            values = (h @ q[c * dim:(c + 1) * dim, c * dim:]).view(len(h), classes - c, dim)
            values = (values * h[:, None]).sum(2).double()
            out[start:start + rows, c, c:] = values
            out[start:start + rows, c:, c] = values
    return out


def _project(emb: torch.Tensor, factors: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """V_x^T X for every point x and a [C*D, C] matrix X: [N, C, C]."""
    classes, dim = factors.shape[1], emb.shape[1]
    by_dim = columns.view(classes, dim, -1).permute(1, 0, 2).reshape(dim, -1).to(emb.dtype)
    return factors @ (emb @ by_dim).double().view(len(emb), classes, -1)


def _columns(factors: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """V = B^T (x) h as a [C*D, C] matrix."""
    return (factors.T[:, None, :] * h.double()[None, :, None]).reshape(-1, factors.shape[0])


class _Objective:
    """P = (lambda I + sum of the Fisher information taken)^{-1} and the C x C matrices S_x, T_x of
    the points, kept exact through rank-C updates (Woodbury)."""

    def __init__(self, p: torch.Tensor, fisher: torch.Tensor, emb: torch.Tensor, factors: torch.Tensor):
        classes = factors.shape[1]
        self.p, self.fisher, self.emb, self.factors = p, fisher, emb, factors
        pfp = p @ fisher @ p
        self.s = factors @ quadratic_forms(emb, p, classes) @ factors.transpose(1, 2)
        self.t = factors @ quadratic_forms(emb, pfp, classes) @ factors.transpose(1, 2)
        self.eye = torch.eye(classes, dtype=torch.float64)

    def gains(self, sign: float, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """tr(T_x (sign I + S_x)^{-1}): the decrease of tr(P F) when x is added (sign 1), or the
        increase when a taken x is removed (sign -1, then minus the gain)."""
        return torch.linalg.solve(sign * self.eye + self.s[rows], self.t[rows]).diagonal(dim1=1, dim2=2).sum(1)

    def update(self, point: int, sign: float, rows: torch.Tensor | slice = slice(None)) -> None:
        """Add (sign 1) or remove (sign -1) ``point``'s Fisher information; S, T follow for ``rows``."""
        v = _columns(self.factors[point], self.emb[point]).to(self.p.dtype)
        w = self.p @ v
        k = torch.linalg.inv(sign * self.eye + (v.T @ w).double())
        fw = self.fisher @ w
        u = self.p @ fw
        g = (w.T @ fw).double()
        self.p -= w @ k.to(w.dtype) @ w.T
        emb, factors = self.emb[rows], self.factors[rows]
        a, b = _project(emb, factors, w), _project(emb, factors, u)
        ak = a @ k
        self.s[rows] -= ak @ a.transpose(1, 2)
        cross = ak @ b.transpose(1, 2)
        self.t[rows] += ak @ (g @ k) @ a.transpose(1, 2) - cross - cross.transpose(1, 2)


def bait_select(probs: torch.Tensor, emb: torch.Tensor, labeled_probs: torch.Tensor, labeled_emb: torch.Tensor,
                query_size: int, lamb: float = 1.0, oversample: float = 2.0) -> torch.Tensor:
    """BAIT's batch (Alg. 1): ``oversample`` x query_size greedy additions of the largest gain, then
    greedy removals of the smallest loss down to query_size. ``probs``/``emb``: the candidates';
    ``labeled_*``: the labeled set's. The C*D x C*D matrices are in emb's dtype (float32 features: float32,
    as the authors' code), the C x C ones in float64. Returns positions into the candidates (forward order)."""
    n, classes = probs.shape
    n_labeled = len(labeled_probs)
    labeled_fisher = fisher_sum(labeled_probs, labeled_emb)
    fisher = (fisher_sum(probs, emb) + labeled_fisher) / (n + n_labeled)
    start = lamb * torch.eye(len(fisher), dtype=fisher.dtype) + labeled_fisher / (n_labeled + query_size)
    p = torch.linalg.inv(start)
    p = (p + p.T) / 2
    factors = fisher_factors(probs) * math.sqrt(query_size / (n_labeled + query_size))
    objective = _Objective(p, fisher, emb, factors)
    taken = torch.zeros(n, dtype=torch.bool)
    chosen = []
    for _ in range(min(n, int(oversample * query_size))):
        point = int(torch.argmax(objective.gains(1.0).masked_fill_(taken, -math.inf)))
        chosen.append(point)
        taken[point] = True
        objective.update(point, 1.0)
    while len(chosen) > query_size:
        rows = torch.tensor(chosen)
        drop = int(torch.argmax(objective.gains(-1.0, rows)))
        point = chosen.pop(drop)
        objective.update(point, -1.0, torch.tensor(chosen))
    return torch.tensor(chosen, dtype=torch.long)


@register_selector("BAIT", aliases=("bait_sampling",), params={
    "LAMBDA": Key(1.0, "BAIT: the ridge lambda of the Fisher objective (the authors' --lamb 1)", above=0),
    "OVERSAMPLE": Key(2.0, "BAIT: forward greedy adds this many times the query before pruning back (the authors' 2)",
                      minimum=1)})
def bait(ctx: QueryContext) -> torch.Tensor:
    return bait_select(ctx.probs().cpu(), ctx.features().cpu(), labeled_probs(ctx), ctx.labeled_features().cpu(),
                       ctx.query_size, ctx.params["BAIT_LAMBDA"], ctx.params.oversample)

