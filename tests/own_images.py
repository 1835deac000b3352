"""A practice folder for "Label your own images" (README): scikit-learn's digits laid out as
``labeled/<class>/``, ``unlabeled/**`` and ``test/<class>/`` PNG files (utils/core/data/own_images.py).

    python tests/own_images.py my_images      # prints the folder and how many images went where

The tests use :func:`make_own_images` (through tests/conftest.py)."""

import os
import sys

import numpy as np


def make_own_images(root, labeled_per_class=2, n_unlabeled=None, n_test=200, classes=10):
    """Write the folder under ``root``: ``labeled/c<k>/`` with ``labeled_per_class`` images per
    class (0: empty folders), ``unlabeled/part<j>/`` (nested) with the others (``n_unlabeled`` of them, default all),
    ``test/c<k>/`` with ``n_test``, drawn from a fixed permutation. Returns {relative path of each
    unlabeled image: its true class folder name}."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < classes)
    order = np.random.default_rng(0).permutation(keep)
    test, rest = order[:n_test], order[n_test:]
    truth, seen = {}, {}

    def save(index, relative):
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.uint8(digits.images[index] * 255 / 16)).save(path)

    for i in rest:
        name = f"c{digits.target[i]}"
        if seen.get(name, 0) < labeled_per_class:
            seen[name] = seen.get(name, 0) + 1
            save(i, f"labeled/{name}/img{i:04d}.png")
        elif n_unlabeled is None or len(truth) < n_unlabeled:
            relative = f"unlabeled/part{i % 3}/img{i:04d}.png"
            save(i, relative)
            truth[relative] = name
    for i in test:
        save(i, f"test/c{digits.target[i]}/img{i:04d}.png")
    for k in range(classes):  # (labeled_per_class 0: empty class folders, a cold start for --init-strategy)
        os.makedirs(os.path.join(root, "labeled", f"c{k}"), exist_ok=True)
    return truth


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or os.path.exists(sys.argv[1]) or (len(sys.argv) == 3 and not sys.argv[2].isdigit()):
        sys.exit("usage: python tests/own_images.py NEW_FOLDER [LABELED_PER_CLASS] (the folder must not exist yet; "
                 "LABELED_PER_CLASS defaults to 2, 0 leaves labeled/<class>/ empty)")
    per_class = int(sys.argv[2]) if len(sys.argv) == 3 else 2
    unlabeled = make_own_images(sys.argv[1], labeled_per_class=per_class)
    print(f"{sys.argv[1]}: labeled/ {per_class} per class (c0..c9), unlabeled/ {len(unlabeled)}, test/ 200 images")
