"""Shared test helpers: tiny fake datasets in the real on-disk formats, and a script runner."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_script(*args, cwd=None, timeout=300, env=None):
    """Run a repository script (``main_TOD.py ...``, or ``-m torch.distributed.run ...``) with
    the test Python; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, *[os.path.join(ROOT, a) if a.endswith(".py") and not os.path.isabs(a) else a
                                 for a in args]]
    return subprocess.run(command, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def _images(rng, n, shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def make_cifar(root, n_train=40, n_test=20, classes=10, hundred=False):
    """A CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) folder."""
    rng = np.random.default_rng(0)
    key = b"fine_labels" if hundred else b"labels"
    folder = os.path.join(root, "cifar-100-python" if hundred else "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    train_names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    per_file = np.array_split(np.arange(n_train), len(train_names))
    for name, part in zip(train_names, per_file):
        batch = {b"data": _images(rng, len(part), (3072,)), key: [int(i % classes) for i in part]}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(batch, fh)
    test = {b"data": _images(rng, n_test, (3072,)), key: [i % classes for i in range(n_test)]}
    with open(os.path.join(folder, "test" if hundred else "test_batch"), "wb") as fh:
        pickle.dump(test, fh)
    return root


def make_svhn(root, n_train=40, n_test=20):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "svhn"), exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (np.arange(n) % 10) + 1  # SVHN stores the digit 0 as label 10
        savemat(os.path.join(root, "svhn", f"{split}_32x32.mat"),
                {"X": _images(rng, n, (32, 32, 3)).transpose(1, 2, 3, 0), "y": labels[:, None]})
    return root


def make_mnist(root, n_train=30, n_test=10):
    """torchvision's raw MNIST layout: big-endian idx files."""
    rng = np.random.default_rng(0)
    folder = os.path.join(root, "MNIST", "raw")
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as fh:
            fh.write(np.array([2051, n, 28, 28], dtype=">i4").tobytes() + _images(rng, n, (28, 28)).tobytes())
        with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as fh:
            fh.write(np.array([2049, n], dtype=">i4").tobytes() + (np.arange(n) % 10).astype(np.uint8).tobytes())
    return root


def write_images(folder, n, size, seed=0, ext="png"):
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        Image.fromarray(_images(rng, 1, (size[1], size[0], 3))[0]).save(os.path.join(folder, f"img{i}.{ext}"))


def make_caltech(root, classes=3, per_class=10):
    folder = os.path.join(root, "101_ObjectCategories")
    write_images(os.path.join(folder, "BACKGROUND_Google"), 2, (40, 30), ext="jpg")
    for c in range(classes):
        write_images(os.path.join(folder, f"class_{c}"), per_class, (40 + c, 30), seed=c, ext="jpg")
    return root


def make_imagenet_weights(path):
    """A file shaped like torchvision's resnet18-5c106cde.pth (random weights)."""
    import torch
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of small tensors: as fast, and immune to a busy second
    core (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_root(tmp_path):
    return str(tmp_path / "data")
