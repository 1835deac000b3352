"""Label propagation and jLP on a CIFAR-sized feature pool (Rethinking deep AL, spec B.5-B.6).

    python bench/label_propagation.py [--n 50000] [--budget 100]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.methods.label_propagation import jlp_select, knn_graph, propagate, pseudo_labels  # noqa: E402


def clustered_features(n, dim=128, classes=10, seed=0):
    """L2-normalised features around one centre per class (a trained network's embedding looks so)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    features = rng.normal(0, 1, (classes, dim))[labels] + rng.normal(0, 1.5, (n, dim))
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32), labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args()
    features, labels = clustered_features(args.n)
    labeled = np.random.default_rng(1).choice(args.n, 100, replace=False)
    start = time.perf_counter()
    graph = knn_graph(features)
    built = time.perf_counter()
    predicted, _ = pseudo_labels(propagate(graph, labeled, labels[labeled], 10))
    done = time.perf_counter()
    print(f"LP, {args.n} x 128 features, k=50: graph {built - start:.1f} s, propagation of 10 classes "
          f"{done - built:.1f} s, total {done - start:.1f} s; pseudo-label accuracy {np.mean(predicted == labels):.3f}")
    start = time.perf_counter()
    jlp_select(graph, labeled, args.budget)
    seconds = time.perf_counter() - start
    print(f"jLP, b={args.budget} sequential CG solves (warm-started) on that graph: {seconds:.1f} s")


if __name__ == "__main__":
    main()
