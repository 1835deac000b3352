"""Open-set pools: a training set whose unlabeled pool mixes known classes with unknown ones.

* CCAL's class-distribution mismatch (Du et al., ICCV'21; spec 002 A.2): 800 initial known labels
  (seed 0, not class-balanced), all other known images unlabeled, plus
  ceil(m |U_in| / (1 - m)) unknown images so that a fraction m of the pool is unknown.
* LfOSA's split (Ning et al., CVPR'22; spec 004 B.2): the known classes are 0..K-1 (or a seeded
  random choice), init-percent of the known images are labeled, the pool is the other known images
  and all unknown ones.

Indices always refer to the full training set. Only known labels are ever trained on; a queried
unknown image costs a label and is counted, never trained on (LfOSA's detector excepted).
"""

import copy
import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from utils.core.errors import UserError

# CCAL's known classes (spec A.1): CIFAR-10 airplane and automobile; 20 CIFAR-100 classes.
CCAL_KNOWN = {
    "cifar10": [0, 1],
    "cifar100": [3, 42, 43, 88, 97, 15, 19, 21, 32, 39, 35, 63, 64, 66, 75, 37, 50, 65, 74, 80],
}


@dataclass
class OpenSetPool:
    """``known_classes`` in their order (class ``known_classes[i]`` becomes label i), the initial
    ``labeled_idx`` (known only) and ``pool_idx`` (unlabeled, known and unknown), and
    ``num_known`` = all known training images of the universe (the recall denominator)."""

    known_classes: np.ndarray
    labeled_idx: np.ndarray
    pool_idx: np.ndarray
    num_known: int

    def is_known(self, targets, indices):
        return np.isin(np.asarray(targets)[np.asarray(indices, dtype=np.int64)], self.known_classes)

    def label_map(self, num_classes):
        """Original class -> 0..K-1 for known classes and K for every unknown class."""
        mapping = np.full(num_classes, len(self.known_classes), dtype=np.int64)
        mapping[self.known_classes] = np.arange(len(self.known_classes))
        return mapping


def choose_known_classes(num_classes, count, random=False, seed=0):
    """0..K-1 (LfOSA), or with ``random`` a seeded random choice of K classes (sorted)."""
    if not 1 <= count < num_classes:
        raise UserError(f"--known-class(es) must be between 1 and {num_classes - 1}, got {count}")
    if random:
        return np.sort(np.random.default_rng(seed).choice(num_classes, count, replace=False))
    return np.arange(count)


def mismatch_pool(targets, known_classes, mismatch, initial=800, seed=0, indices=None):
    """CCAL's pool (A.2): ``initial`` random known labels, the remaining known images U_in, and
    ceil(mismatch |U_in| / (1 - mismatch)) random unknown images U_out, both drawn as the seed does
    (Python's ``random.sample`` from a generator seeded with ``seed``, on ascending index lists)."""
    if not 0 <= mismatch < 1:
        raise UserError(f"--mismatch must be in [0, 1), got {mismatch}")
    targets = np.asarray(targets)
    indices = np.arange(len(targets)) if indices is None else np.sort(np.asarray(indices))
    known_mask = np.isin(targets[indices], known_classes)
    known, unknown = indices[known_mask], indices[~known_mask]
    if initial > len(known):
        raise UserError(f"{initial} initial labels asked for, but only {len(known)} known-class images exist")
    labeled = np.sort(np.asarray(random.Random(seed).sample(known.tolist(), initial), dtype=np.int64))
    unlabeled_known = np.setdiff1d(known, labeled)
    n_out = math.ceil(mismatch * len(unlabeled_known) / (1 - mismatch))  # float rounding kept: m=0.8 -> 36,801
    if n_out > len(unknown):
        raise UserError(f"--mismatch {mismatch} needs {n_out} unknown-class images, only {len(unknown)} exist")
    unlabeled_unknown = np.sort(np.asarray(random.Random(seed).sample(unknown.tolist(), n_out), dtype=np.int64))
    return OpenSetPool(np.asarray(known_classes), labeled, np.union1d(unlabeled_known, unlabeled_unknown), len(known))


def init_percent_pool(targets, known_classes, init_percent, seed=0, indices=None):
    """LfOSA's pool (B.2): floor(n_known init_percent / 100) random known labels (seeded; the
    seed's shuffle was not), the pool = the other known images + every unknown image."""
    targets = np.asarray(targets)
    indices = np.arange(len(targets)) if indices is None else np.sort(np.asarray(indices))
    known = indices[np.isin(targets[indices], known_classes)]
    count = int(len(known) * init_percent / 100)
    if count < 1:
        raise UserError(f"--init-percent {init_percent} labels no image of the {len(known)} known-class images")
    labeled = np.sort(np.random.default_rng(seed).permutation(known)[:count])
    return OpenSetPool(np.asarray(known_classes), labeled, np.setdiff1d(indices, labeled), len(known))


def query_metrics(pool, targets, queried, labeled_known_after):
    """The cycles.csv open-set columns of one query: n_queried, n_queried_known, precision (the
    known fraction of the query) and recall (labeled known images after the query / all known)."""
    known = int(pool.is_known(targets, queried).sum()) if len(queried) else 0
    return {"n_queried": len(queried), "n_queried_known": known,
            "precision": round(known / len(queried), 6) if len(queried) else 0.0,
            "recall": round(labeled_known_after / pool.num_known, 6)}


def relabel(dataset, mapping):
    """A shallow copy of ``dataset`` whose targets go through ``mapping`` (images shared)."""
    relabelled = copy.copy(dataset)
    relabelled.targets = torch.as_tensor(mapping)[dataset.targets]
    return relabelled


def known_class_view(data, pool, **replacements):
    """``data`` (a utils.core.data.ImageData) as a K-way problem: known classes relabelled 0..K-1 (every
    unknown class K), ``num_classes`` K and only the known-class test images; ``replacements`` set
    other fields (e.g. transforms)."""
    known_test = np.isin(data.test.targets.numpy()[data.test_idx], pool.known_classes)
    if not known_test.any():
        raise UserError("the test set holds no image of the known classes; raise --max-test-samples")
    mapping = pool.label_map(data.num_classes)
    return dataclasses.replace(data, train=relabel(data.train, mapping), test=relabel(data.test, mapping),
                               num_classes=len(pool.known_classes), test_idx=data.test_idx[known_test], **replacements)


def split_query(pool, targets, queried, labeled_known_before):
    """The oracle's answer to a query: (its known part, its unknown part, the cycles.csv metrics)."""
    is_known = pool.is_known(targets, queried)
    known = np.asarray(queried)[is_known]
    return known, np.asarray(queried)[~is_known], query_metrics(pool, targets, queried,
                                                               labeled_known_before + len(known))
