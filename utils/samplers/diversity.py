"""Diversity-based strategies over embeddings: k-center greedy (Sener & Savarese, ICLR'18)."""

import torch

from utils.samplers.registry import register_selector

CHUNK_ELEMENTS = 2**24  # distance-matrix blocks stay below 64 MB of float32


def min_sq_distances(points, centers):
    """min_j ||points_i - centers_j||^2 for every point, computed in blocks (never N x L)."""
    result = torch.full((len(points),), float("inf"), dtype=torch.float32, device=points.device)
    if len(centers) == 0:
        return result
    point_norms = points.pow(2).sum(1)
    rows = max(1, CHUNK_ELEMENTS // max(1, len(centers)))
    cols = max(1, CHUNK_ELEMENTS // rows)
    for start in range(0, len(centers), cols):
        block = centers[start:start + cols]
        block_norms = block.pow(2).sum(1)
        for row in range(0, len(points), rows):
            part = points[row:row + rows]
            dist = point_norms[row:row + rows, None] + block_norms[None] - 2 * (part @ block.T)
            result[row:row + rows] = torch.minimum(result[row:row + rows], dist.min(1).values)
    return result.clamp_min_(0)


def kcenter_greedy(pool_emb, labeled_emb, query_size):
    """Furthest-first traversal (Sener & Savarese, Alg. 1): repeatedly take the pool point
    farthest from the labeled set and the points taken so far. Returns ``query_size`` indices
    into ``pool_emb`` in pick order; O(N D) memory, one N x D mat-vec per pick."""
    pool = pool_emb.float()
    labeled = labeled_emb.float().to(pool.device)
    if query_size > len(pool):
        raise ValueError(f"cannot pick {query_size} centres from {len(pool)} points")
    min_dist = min_sq_distances(pool, labeled)
    norms = pool.pow(2).sum(1)
    chosen = torch.empty(query_size, dtype=torch.long)
    for i in range(query_size):
        pick = int(torch.argmax(min_dist))  # the first of equal maxima: deterministic
        chosen[i] = pick
        dist = (norms + norms[pick] - 2 * torch.mv(pool, pool[pick])).clamp_min_(0)
        min_dist = torch.minimum(min_dist, dist)
        min_dist[pick] = -1.0  # never again, even among exact duplicates
    return chosen


@register_selector("KCenterGreedy", aliases=("kcenter", "k_center_greedy"))
def kcenter_positions(ctx):
    """Greedy k-center on the penultimate embeddings of the candidates and the labeled set."""
    device = ctx.dist.device
    return kcenter_greedy(ctx.features().to(device), ctx.labeled_features().to(device), ctx.query_size)
