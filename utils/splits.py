"""Seeded, class-balanced index subsets."""

import numpy as np

from utils.cli import UserError


def balanced_subset(targets, size, seed, indices=None):
    """``size`` indices drawn from ``indices`` (default: all) with the classes as equal as the
    data allows: every class gets ``size // C`` (one more for the first ``size % C`` classes in
    a seeded order); a class with too few samples gives all it has and the others fill the gap.
    Returns the chosen indices, sorted."""
    targets = np.asarray(targets)
    indices = np.arange(len(targets)) if indices is None else np.asarray(indices)
    if size > len(indices):
        raise UserError(f"asked for {size} samples but only {len(indices)} are available")
    rng = np.random.default_rng(seed)
    labels = targets[indices]
    classes = np.unique(labels)
    by_class = [rng.permutation(indices[labels == c]) for c in classes]
    counts = np.array([len(members) for members in by_class])
    quota = np.zeros(len(classes), dtype=int)
    remaining = size
    open_classes = np.flatnonzero(counts > 0)
    while remaining > 0:  # water-filling: at most C rounds
        share, extra = divmod(remaining, len(open_classes))
        add = np.full(len(open_classes), share)
        add[rng.permutation(len(open_classes))[:extra]] += 1
        add = np.minimum(add, counts[open_classes] - quota[open_classes])
        quota[open_classes] += add
        remaining -= int(add.sum())
        open_classes = open_classes[quota[open_classes] < counts[open_classes]]
    return np.sort(np.concatenate([members[:q] for members, q in zip(by_class, quota)]))


def random_subset(indices, size):
    """``size`` of ``indices`` in a random order drawn from the global numpy RNG (seeded per trial)."""
    indices = np.asarray(indices)
    if size > len(indices):
        raise UserError(f"asked for {size} samples but only {len(indices)} are available")
    return indices[np.random.permutation(len(indices))[:size]]
