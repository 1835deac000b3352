"""CoreSet (Sener & Savarese, ICLR'18, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach"): the robust k-center problem with outliers (Sec. 4.2, Eq. 6, Alg. 2), solved as a sequence of
mixed-integer feasibility programs (HiGHS through ``scipy.optimize.milp``) in a binary search on the
covering radius, started from the greedy k-center solution (Alg. 1, ``kcenter_greedy``)."""

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from utils.core.config import Key
from utils.core.progress import stage_counter
from utils.samplers.diversity import kcenter_greedy, min_sq_distances
from utils.samplers.registry import QueryContext, register_selector

log = logging.getLogger(__name__)

PAIR_CHUNK = 2**22  # float64 distance blocks between MIP nodes stay below 32 MB


@dataclass(frozen=True)
class RobustKCenterResult:
    """What ``robust_kcenter_solve`` did.

    ``positions``: LongTensor[query_size], distinct positions into the pool.
    ``path``: ``"mip"`` (a MIP solution better than greedy), ``"greedy"`` (the search found nothing better than the
    greedy solution: every smaller radius was proven infeasible, or the subset solution was worse on the whole pool),
    ``"timeout"`` (the time limit ran out before any improvement: greedy), ``"too_large"`` (the size caps leave
    fewer than 2 x query_size MIP nodes: greedy) or ``"trivial"`` (query_size is 0 or the whole pool).
    ``radius`` / ``greedy_radius``: robust covering radius over the whole pool (the distance of the (Ξ+1)-th farthest
    point from labeled ∪ new centres) of the returned / the greedy solution; ``delta_greedy``: δ_2-OPT, the plain
    covering radius of the greedy solution. ``outliers``: Ξ. ``nodes``: pool points in the MIP; ``exact``: every pool
    point left out of the MIP is within ``radius`` of a labeled point (so the subset restriction of the points to
    cover cost nothing). ``solves``: MIPs solved; ``timed_out``: the time limit stopped the search."""

    positions: torch.Tensor
    path: str
    radius: float
    greedy_radius: float
    delta_greedy: float
    outliers: int
    nodes: int
    exact: bool
    solves: int
    timed_out: bool
    seconds: float


def robust_radius(sq_dist: torch.Tensor, outliers: int) -> float:
    """sqrt of the (outliers + 1)-th largest squared distance: the covering radius once the ``outliers`` farthest
    points are given up (0 when every point may be an outlier)."""
    if outliers >= len(sq_dist):
        return 0.0
    return math.sqrt(float(torch.topk(sq_dist, outliers + 1).values[-1]))


def near_pairs(points: torch.Tensor, max_sq: float,
               max_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pairs (i, j), j < i, of rows of ``points`` at squared distance <= ``max_sq``, found in row blocks (float64,
    at most ``PAIR_CHUNK`` distances at a time; never the full square matrix). Rows are taken in order and the scan
    stops before the first row that would take the count above ``max_pairs``: returns numpy ``rows, cols, sq`` and
    ``kept``, the number of leading rows whose pairs (all among themselves, since j < i) are complete."""
    x = points.double()
    norms = x.pow(2).sum(1)
    k = len(x)
    rows, cols, sqs = [], [], []
    total = 0
    block = max(1, PAIR_CHUNK // max(1, k))
    for r0 in range(0, k, block):
        r1 = min(k, r0 + block)
        sq = (norms[r0:r1, None] + norms[None, :r1] - 2 * (x[r0:r1] @ x[:r1].T)).clamp_min_(0)
        lower = torch.arange(r1)[None, :] < torch.arange(r0, r1)[:, None]
        i, j = torch.nonzero((sq <= max_sq) & lower, as_tuple=True)
        cumulative = total + torch.cumsum(torch.bincount(i, minlength=r1 - r0), 0)
        full = int((cumulative <= max_pairs).sum())  # leading rows of this block that fit
        keep = i < full
        rows.append((i[keep] + r0).numpy())
        cols.append(j[keep].numpy())
        sqs.append(sq[i[keep], j[keep]].numpy())
        if full < r1 - r0:
            return np.concatenate(rows), np.concatenate(cols), np.concatenate(sqs), r0 + full
        total = int(cumulative[-1])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), k
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sqs), k


def feasible(delta: float, pair_rows: np.ndarray, pair_cols: np.ndarray, pair_sq: np.ndarray, node_lab_sq: np.ndarray,
             new_centres: int, outliers: int, time_limit: float) -> tuple[str, np.ndarray | None]:
    """Feasible(b, s0, δ, Ξ) of Alg. 2 over the k MIP nodes: is there a set of ``new_centres`` nodes such that at
    most ``outliers`` nodes are farther than ``delta`` from labeled ∪ new centres?

    Eq. 6 with the assignment variables ω projected out: a node whose nearest labeled point is within δ is covered
    by its fixed centre (u_j = 1 for j in s0) and needs no row; every other node i gets the covering row
    Σ_{j: d(i,j) <= δ} u_j + ξ_i >= 1, where ξ_i (the paper's Σ_j ξ_ij: i assigned beyond δ, an outlier) is binary;
    Σ_j u_j = b over the pool nodes; Σ_i ξ_i <= Ξ. (Σ_j ω_ij = 1, ω_ij <= u_j and ω_ij = ξ_ij for d > δ admit an
    ω exactly when these rows hold, and the LP relaxations coincide, so this is the same program with k + rows
    variables instead of N².) Zero objective: HiGHS stops at the first feasible point.
    Returns (status, u) with status "feasible", "infeasible" or "unknown" (time limit, no point found)."""
    k = len(node_lab_sq)
    delta_sq = delta * delta
    need = np.flatnonzero(node_lab_sq > delta_sq)
    m = len(need)
    row_of = np.full(k, -1, dtype=np.int64)
    row_of[need] = np.arange(m)
    within = pair_sq <= delta_sq
    a, b = pair_rows[within], pair_cols[within]
    rows = np.concatenate([row_of[a], row_of[b], np.arange(m)])  # both directions of each pair, and i covers i
    cols = np.concatenate([b, a, need])
    use = rows >= 0
    cover = sparse.csr_array((np.ones(int(use.sum())), (rows[use], cols[use])), shape=(m, k))
    use_xi = outliers > 0 and m > 0
    n_var = k + (m if use_xi else 0)
    cardinality = np.zeros((1, n_var))
    cardinality[0, :k] = 1.0
    constraints = [LinearConstraint(cardinality, new_centres, new_centres)]
    if m:
        matrix = sparse.hstack([cover, sparse.identity(m, format="csr")], format="csr") if use_xi else cover
        constraints.append(LinearConstraint(matrix, 1.0, np.inf))
    if use_xi:
        budget = np.zeros((1, n_var))
        budget[0, k:] = 1.0
        constraints.append(LinearConstraint(budget, 0.0, float(outliers)))
    result = milp(np.zeros(n_var), integrality=np.ones(n_var), bounds=Bounds(0.0, 1.0), constraints=constraints,
                  options={"time_limit": float(time_limit), "disp": False, "presolve": True})
    if result.x is not None and result.status in (0, 1):
        return "feasible", result.x[:k] > 0.5
    if result.status == 2:
        return "infeasible", None
    return "unknown", None


def robust_kcenter_solve(pool_emb: torch.Tensor, labeled_emb: torch.Tensor, query_size: int,
                         outlier_fraction: float = 1e-4, outliers: int | None = None, time_limit: float = 60.0,
                         max_nodes: int = 5000, max_pairs: int = 2_000_000, max_steps: int = 10,
                         tolerance: float = 1e-4) -> RobustKCenterResult:
    """Robust k-center (Sener & Savarese, Sec. 4.2, Alg. 2) on top of the greedy solution (Alg. 1).

    1. Greedy k-center gives s_g and δ = δ_2-OPT, its covering radius over the pool; OPT is in [δ/2, δ].
    2. Binary search on the radius between lb = δ/2 and ub = δ: Feasible(b, s0, r, Ξ) (Eq. 6, see ``feasible``)
       -> ub = r (in fact the radius the solution reaches, <= r) and keep the solution, else lb = r (only when
       HiGHS *proves* infeasibility). Stops after ``max_steps`` solves, when ub - lb <= tolerance · δ, or when
       ``time_limit`` seconds of wall time for the MIP phase (node pairs and solves; the greedy pass before it is not
       counted) run out: each solve gets what is left as HiGHS' ``time_limit``, and a solve stopped by it without a
       feasible point ends the search (the best solution so far, else greedy with path "timeout").
       δ/2 only bounds the outlier-free optimum: if a solution with outliers beats it, lb drops to 0.
    3. Ξ = floor(outlier_fraction · (N + L)) as the paper (1e-4 · n), or ``outliers`` if given.

    Bounding the problem. The MIP variables are one u_j per *node* and one ξ_i per node farther than r from every
    labeled point (labeled points are fixed centres, not variables; ω is projected out); the rows are sparse, from
    the node pairs within δ, computed once in blocks. The nodes are the greedy picks, then the other pool points by
    decreasing distance to the labeled set (the points that can need a new centre come first), at most
    ``max_nodes``, and cut further so that the node pairs within δ are at most ``max_pairs``. When every pool point
    with distance > lb to the labeled set is a node the search is exact but for the candidate centres being the
    nodes; otherwise the points left out are only the ones closest to the labeled set. Fewer than
    min(N, 2 · query_size) nodes -> greedy (path "too_large").

    The result has exactly ``query_size`` distinct positions: the solution's centres (in node order), trimmed or
    padded with the greedy picks in greedy order if HiGHS returned another count. It is compared with greedy by the
    robust radius over the *whole* pool and greedy is kept unless the MIP solution is at least as good. Returns a
    ``RobustKCenterResult`` (positions, the path taken, radii, timing). Under an active run a slow search reports
    ``[query] CoreSet MIP s/max_steps solves radius in [lb, ub] time limit .. elapsed ..`` after each solve (a
    solve is one HiGHS call, with no progress of its own)."""
    start = time.perf_counter()
    pool = pool_emb.detach().float().cpu()
    labeled = labeled_emb.detach().float().cpu().reshape(-1, pool.shape[1])
    n = len(pool)
    budget = int(outliers) if outliers is not None else int(math.floor(outlier_fraction * (n + len(labeled))))
    greedy = kcenter_greedy(pool, labeled, query_size)  # raises if query_size > n
    lab_sq = min_sq_distances(pool, labeled)
    greedy_sq = torch.minimum(lab_sq, min_sq_distances(pool, pool[greedy])) if query_size else lab_sq
    delta = math.sqrt(float(greedy_sq.max())) if n else 0.0
    greedy_radius = robust_radius(greedy_sq, budget) if n else 0.0
    state = {"nodes": 0, "solves": 0, "timed_out": False}
    deadline = time.perf_counter() + time_limit  # the MIP phase's budget; greedy is not counted

    def finish(positions: torch.Tensor, path: str, radius: float, exact: bool = True) -> RobustKCenterResult:
        result = RobustKCenterResult(torch.as_tensor(positions, dtype=torch.long), path, radius, greedy_radius, delta,
                                     budget, state["nodes"], exact, state["solves"], state["timed_out"],
                                     time.perf_counter() - start)
        log.info("CoreSet: path %s, radius %.4g (greedy %.4g, δ_2-OPT %.4g), %d nodes, %d MIP solves, %.1f s",
                 path, radius, greedy_radius, delta, result.nodes, result.solves, result.seconds)
        return result

    if query_size == 0 or query_size == n:
        return finish(greedy, "trivial", greedy_radius)
    if delta == 0.0 or greedy_radius == 0.0:
        return finish(greedy, "greedy", greedy_radius)

    # MIP nodes: greedy picks, then the rest by decreasing distance to the labeled set
    is_pick = torch.zeros(n, dtype=torch.bool)
    is_pick[greedy] = True
    rest = torch.nonzero(~is_pick).squeeze(1)
    rest = rest[torch.argsort(lab_sq[rest], descending=True, stable=True)]
    order = torch.cat([greedy, rest])[: min(n, max_nodes)]
    pair_rows, pair_cols, pair_sq, kept = near_pairs(pool[order], delta * delta, max_pairs)
    order = order[:kept]
    state["nodes"] = kept
    if kept < min(n, 2 * query_size):
        return finish(greedy, "too_large", greedy_radius)
    node_lab_sq = lab_sq[order].double().numpy()
    outside_sq = float(lab_sq[torch.ones(n, dtype=torch.bool).index_fill_(0, order, False)].max()) if kept < n else 0.0

    lb, ub, best = delta / 2, min(delta, greedy_radius), None
    if ub <= lb:  # only with outliers: greedy's robust radius already beats δ/2
        lb = 0.0
    with stage_counter("query", "CoreSet MIP", max_steps, "solves", eta=False) as report:
        while state["solves"] < max_steps and ub - lb > tolerance * delta:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                state["timed_out"] = True
                break
            r = (lb + ub) / 2
            status, chosen = feasible(r, pair_rows, pair_cols, pair_sq, node_lab_sq, query_size, budget, remaining)
            state["solves"] += 1
            if status == "unknown":
                state["timed_out"] = True
                break
            if status == "infeasible":
                lb = r
            else:
                best = order[torch.from_numpy(chosen)]
                node_sq = torch.minimum(lab_sq[order], min_sq_distances(pool[order], pool[best]))
                ub = min(r, robust_radius(node_sq, budget))
                if ub <= lb:  # only with outliers: the robust optimum is below δ/2
                    lb = 0.0
            report.set_postfix_str(f"radius in [{lb:.4g}, {ub:.4g}] time limit {time_limit:g}s", refresh=False)
            report.update(1)

    if best is None:
        return finish(greedy, "timeout" if state["timed_out"] else "greedy", greedy_radius)
    best = best[:query_size]
    if len(best) < query_size:
        spare = greedy[~torch.isin(greedy, best)]
        best = torch.cat([best, spare[: query_size - len(best)]])
    radius = robust_radius(torch.minimum(lab_sq, min_sq_distances(pool, pool[best])), budget)
    if radius > greedy_radius:
        return finish(greedy, "greedy", greedy_radius, exact=outside_sq <= greedy_radius**2)
    return finish(best, "mip", radius, exact=outside_sq <= radius**2)


def robust_kcenter(pool_emb: torch.Tensor, labeled_emb: torch.Tensor, query_size: int,
                   outlier_fraction: float = 1e-4, outliers: int | None = None, time_limit: float = 60.0,
                   max_nodes: int = 5000, max_pairs: int = 2_000_000, max_steps: int = 10) -> torch.Tensor:
    """CoreSet's robust k-center (Sener & Savarese, Alg. 2): ``query_size`` positions into ``pool_emb`` [N, D],
    given the labeled embeddings [L, D]. See ``robust_kcenter_solve`` for the algorithm, the size bounds and the
    fall-back to greedy k-center; this returns only the positions (LongTensor[query_size])."""
    return robust_kcenter_solve(pool_emb, labeled_emb, query_size, outlier_fraction, outliers, time_limit, max_nodes,
                                max_pairs, max_steps).positions


# ("coreset" is the name itself: case is ignored)
@register_selector("CoreSet", aliases=("core_set",), embeddings=True, model_free=True, params={
    "OUTLIER_FRACTION": Key(1e-4, "CoreSet: the outliers the robust k-center may leave, as a fraction of pool + "
                            "labeled (the paper's 1e-4)", minimum=0, below=1),
    "TIME_LIMIT": Key(60.0, "CoreSet: seconds for the MIP phase before the best solution so far (greedy at worst) "
                      "is taken", above=0)})
def coreset_positions(ctx: QueryContext) -> torch.Tensor:
    """Robust k-center on the penultimate embeddings of the candidates and the labeled set (``robust_kcenter_solve``:
    Xi = CORESET_OUTLIER_FRACTION * n, CORESET_TIME_LIMIT seconds for the MIP phase, at most 5000 MIP nodes). The
    last ``RobustKCenterResult`` (path taken, radii, time) is kept in ``coreset_positions.last_solution``."""
    result = robust_kcenter_solve(ctx.features(), ctx.labeled_features(), ctx.query_size,
                                  outlier_fraction=ctx.params.outlier_fraction, time_limit=ctx.params.time_limit)
    coreset_positions.last_solution = result
    return result.positions


coreset_positions.last_solution = None
