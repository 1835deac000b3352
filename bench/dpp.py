"""Time and memory of BaselineSampling's k-DPP chain (utils/samplers/dpp.py) against the same
chain on materialised gradient embeddings (the toolkit's N x C*D float64 matrix).

    python bench/dpp.py                 # N = 20,000, D = 128, C = 10, k = 100 (a few seconds)
    python bench/dpp.py 50000 128 10 1000
"""

import os
import sys
import time
import tracemalloc

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.samplers.dpp import gradient_factors, independent_start, kdpp_iterations, kdpp_select  # noqa: E402


def materialised_chain(probs, emb, k, rng):
    """The same exchange chain, with every kernel value read off explicit gradient embeddings
    g_i = a_i (x) h_i (``[N, C*D]`` float64, as the toolkit builds them) and the determinant ratio
    from the Schur complements of the current set's inverse."""
    a, h = gradient_factors(probs, emb)
    phi = (a[:, :, None] * h[:, None, :]).reshape(len(a), -1)
    members = independent_start(a, h, k, rng)
    inverse = np.linalg.inv(phi[members] @ phi[members].T)
    iterations = kdpp_iterations(k)
    positions, outside_at, uniforms = rng.integers(k, size=iterations), rng.integers(len(a) - k, size=iterations), \
        rng.random(iterations)
    outside = np.setdiff1d(np.arange(len(a)), members)
    for r, j, u in zip(positions.tolist(), outside_at.tolist(), uniforms.tolist()):
        v = int(outside[j])
        w = phi[members] @ phi[v]
        z = inverse @ w
        schur = phi[v] @ phi[v] - w @ z + z[r] ** 2 / inverse[r, r]
        if u < schur * inverse[r, r]:
            outside[j] = members[r]
            members[r] = v
            inverse = np.linalg.inv(phi[members] @ phi[members].T)
    return members


def main(n=20_000, d=128, c=10, k=100):
    torch.manual_seed(0)
    probs = torch.softmax(2 * torch.randn(n, c), 1)
    emb = torch.relu(torch.randn(n, d))
    print(f"k-DPP over gradient embeddings: N={n:,} D={d} C={c} k={k}, {kdpp_iterations(k):,} swap proposals, "
          f"{torch.get_num_threads()} threads")
    times = []
    for _ in range(5):
        start = time.perf_counter()
        ours = kdpp_select(probs, emb, k, np.random.default_rng(2))
        times.append(time.perf_counter() - start)
    print(f"  factorised: median {np.median(times):.2f} s over 5 runs (min {min(times):.2f}, max {max(times):.2f})")
    tracemalloc.start()
    kdpp_select(probs, emb, k, np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  factorised peak memory {peak / 2**20:.1f} MB (factors N*(C+D)*8 = {n * (c + d) * 8 / 2**20:.1f} MB; "
          f"an N x N float64 kernel would be {n * n * 8 / 2**30:.1f} GB)")
    start = time.perf_counter()
    theirs = materialised_chain(probs, emb, k, np.random.default_rng(2))
    print(f"  reference on materialised embeddings ({n * c * d * 8 / 2**20:.0f} MB; a fresh k x k inverse per "
          f"accepted swap): {time.perf_counter() - start:.2f} s, the same picks: {np.array_equal(theirs, ours)}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
