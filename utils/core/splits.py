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
