"""Seeded, class-balanced index subsets and the split files of the Rethinking protocol."""

import hashlib
import os

import numpy as np

from utils.core.errors import UserError


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


def long_tail_subset(targets, indices, ratio: float, seed: int) -> tuple[np.ndarray, list[int]]:
    """A long-tailed subset of ``indices`` (the CIFAR-10-LT profile, Cao et al., NeurIPS'19): the class
    at rank r of a seeded random order of the C classes present keeps int(n_max * ratio^(-r/(C-1)))
    of its images (n_max: the largest class's count; at least 1, at most what the class has), drawn
    at random, so the head keeps n_max and the tail n_max / ratio. Returns (the indices, sorted; the
    kept count of every class 0..max label)."""
    targets = np.asarray(targets)
    indices = np.asarray(indices)
    rng = np.random.default_rng([seed, 7919])  # its own stream: the other subsets' draws stay as they were
    labels = targets[indices]
    classes, counts = np.unique(labels, return_counts=True)
    n_max, steps = int(counts.max()), max(len(classes) - 1, 1)
    rank = np.empty(len(classes), dtype=int)
    rank[rng.permutation(len(classes))] = np.arange(len(classes))  # rank 0: the head class
    keep = np.minimum(counts, np.maximum(1, (n_max * (1.0 / ratio) ** (rank / steps)).astype(int)))
    chosen = [rng.permutation(indices[labels == c])[:k] for c, k in zip(classes, keep)]
    per_class = np.zeros(int(targets.max()) + 1, dtype=int)
    per_class[classes] = keep
    return np.sort(np.concatenate(chosen)), per_class.tolist()


def random_subset(indices, size):
    """``size`` of ``indices`` in a random order drawn from the global numpy RNG (seeded per trial)."""
    indices = np.asarray(indices)
    if size > len(indices):
        raise UserError(f"asked for {size} samples but only {len(indices)} are available")
    return indices[np.random.permutation(len(indices))[:size]]


def pool_fingerprint(indices) -> str:
    """A short fingerprint of a pool: the first 12 hex digits of the sha256 of its sorted indices."""
    return hashlib.sha256(np.sort(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()[:12]


def split_path(root: str, dataset: str, size: int, split: int, pool=None) -> str:
    """``<root>/labels/<dataset>/<size>_balanced_labels/<split>.txt`` (the seed's layout) for a split
    of the whole training set (``pool`` None); a split of some of its images (``pool``: their
    indices) lives in ``<size>_balanced_labels_pool-<pool_fingerprint>/`` instead."""
    name = dataset.replace("folder:", "folder-").replace(os.sep, "-")
    folder = f"{size}_balanced_labels" + ("" if pool is None else f"_pool-{pool_fingerprint(pool)}")
    return os.path.join(root, "labels", name, folder, f"{split:02d}.txt")


def make_split(targets, indices, size, split):
    """Split ``split``: ``size`` class-balanced indices, drawn from a numpy generator seeded by
    (7, split) only, so every machine writes the same file."""
    return balanced_subset(targets, size, [7, split], indices)


def write_split(path, indices, targets):
    """One line per labeled image: ``<training-set index> <class>``, written atomically."""
    from utils.core.results import write_text

    write_text(path, "".join(f"{i} {targets[i]}\n" for i in indices))


def read_split(path: str, pool) -> np.ndarray:
    """The indices of the split file ``path``, every one of them in ``pool`` (the images the run
    may label), each once."""
    try:
        with open(path) as fh:
            indices = np.array([int(line.split()[0]) for line in fh if line.strip()], dtype=np.int64)
    except (OSError, ValueError, IndexError) as exc:
        raise UserError(f"split file {path} is unreadable ({exc}); delete it to have it made again") from None
    if len(indices) == 0 or len(np.unique(indices)) != len(indices):
        raise UserError(f"split file {path} is empty or repeats an index; delete it to have it made again")
    outside = np.count_nonzero(~np.isin(indices, pool))
    if outside:
        raise UserError(f"split file {path}: {outside} of its {len(indices)} images are not in this run's pool of "
                        f"{len(pool)} (drawn for another --max-train-samples, --seed or dataset?); delete it to "
                        "have it made again")
    return indices
