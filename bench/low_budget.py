"""Speed and memory of the representation-based strategies (TypiClust, ProbCover, MaxHerding) on
synthetic embeddings shaped like self-supervised ones.

    python bench/low_budget.py --n 50000 --d 512
    python bench/low_budget.py --n 200000 --d 512 --strategies ProbCover

One line per strategy: ``<Strategy> n=<N> d=<D> seconds=<s> peak_mb=<MB> cpu_seconds=<s>
search=<exact|ivf>`` (cpu_seconds: user + system time of all threads, a figure that other jobs on a
shared machine inflate far less than the wall-clock seconds), plus
``recall=<r>`` where the neighbour search is approximate (recall@k of the strategy's k nearest
neighbours against exact search, on 1,000 sampled points, measured outside the timed run). Each
strategy runs in a forked process: peak_mb is that process's peak resident memory, which includes
the N x D embeddings and the imported libraries (about 300 MB).

The embeddings: 100 Gaussian clusters of varied width and size on a 32-dimensional subspace, mapped
linearly into D dimensions, isotropic noise added, rows L2-normalised (real embeddings have a low
intrinsic dimension; uniform noise in 512 dimensions has no neighbour structure to find).
"""

import argparse
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.samplers.representation import (  # noqa: E402
    PURITY_NEIGHBOURS,
    herding_select,
    knn,
    neighbour_recall,
    probcover_select,
    resolve_search,
    typiclust_select,
)

STRATEGIES = ("TypiClust", "ProbCover", "MaxHerding")
NEIGHBOURS = {"ProbCover": PURITY_NEIGHBOURS, "MaxHerding": 100}  # the k whose recall is reported


def embeddings(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent, clusters = 32, 100
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    widths = rng.uniform(0.2, 0.6, clusters).astype(np.float32)
    members = rng.choice(clusters, n, p=rng.dirichlet(np.full(clusters, 5.0)))
    mapping = rng.normal(size=(latent, d)).astype(np.float32) / np.sqrt(latent)
    x = np.empty((n, d), np.float32)
    for start in range(0, n, 20_000):  # in blocks: no N x D temporaries
        part = members[start:start + 20_000]
        z = centres[part] + widths[part, None] * rng.standard_normal((len(part), latent), dtype=np.float32)
        x[start:start + len(part)] = z @ mapping + 0.1 * rng.standard_normal((len(part), d), dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=x)


def run(name: str, points: np.ndarray, labeled: int, budget: int, search: str, seed: int):
    pool, known = points[labeled:], points[:labeled]
    if name == "TypiClust":
        return typiclust_select(pool, known, budget, seed=seed, search=search)
    if name == "ProbCover":
        return probcover_select(pool, known, budget, classes=10, seed=seed, search=search)
    return herding_select(pool, known, budget, 1.0, NEIGHBOURS["MaxHerding"], seed=seed, search=search)


def one(name: str, args) -> None:
    """Run ``name`` alone and print its wall seconds, CPU seconds (user + system, all threads) and this
    process's peak resident MB."""
    points = embeddings(args.n, args.d, args.seed)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, start = usage.ru_utime + usage.ru_stime, time.perf_counter()
    picks = run(name, points, args.labeled, args.budget, args.search, args.seed)
    seconds = time.perf_counter() - start
    assert len(np.unique(picks)) == args.budget
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{seconds:.1f} {usage.ru_utime + usage.ru_stime - cpu:.1f} {usage.ru_maxrss / 1024:.0f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="points (labeled + candidates)")
    parser.add_argument("--d", type=int, default=512, help="embedding dimension")
    parser.add_argument("--labeled", type=int, default=100, help="labeled points (the first rows)")
    parser.add_argument("--budget", type=int, default=100, help="points to pick")
    parser.add_argument("--search", default="auto", choices=("auto", "exact", "ivf"))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", choices=STRATEGIES, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.one:
        return one(args.one, args)
    search = resolve_search(args.search, args.n)
    points = None
    for name in args.strategies:
        command = [sys.executable, os.path.abspath(__file__), "--one", name, "--n", str(args.n), "--d", str(args.d),
                   "--labeled", str(args.labeled), "--budget", str(args.budget), "--search", args.search,
                   "--seed", str(args.seed)]
        seconds, cpu, peak = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-3:]
        line = f"{name} n={args.n} d={args.d} seconds={seconds} peak_mb={peak} cpu_seconds={cpu}"
        # TypiClust searches within clusters (|L| + B of them), each far below the auto switch
        used = "exact" if name == "TypiClust" and args.search == "auto" else search
        line += f" search={used}"
        if used == "ivf" and name in NEIGHBOURS:
            points = embeddings(args.n, args.d, args.seed) if points is None else points
            _, idx = knn(points[args.labeled:], NEIGHBOURS[name], "ivf", args.seed)
            line += f" recall={neighbour_recall(points[args.labeled:], idx, seed=args.seed):.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
