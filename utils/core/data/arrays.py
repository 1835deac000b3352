"""Readers of the datasets stored as arrays (CIFAR's pickled batches, SVHN's .mat files, MNIST's idx
files through torchvision), each checking what it reads: a malformed or hostile file is one line
naming it, a pickle can only build plain data (AllowListUnpickler), and a compressed file's declared
shapes are checked against the in-memory budget before it is inflated."""

import os
import pickle
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from utils.core.data.images import CACHE_BYTES, TensorImages
from utils.core.errors import UserError, one_line
from utils.core.results import load_failure


def torchvision_datasets():
    """torchvision.datasets, imported on first use (its downloaders need a network)."""
    import torchvision.datasets as tvd

    return tvd


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 pickles bytes at protocols 0-2 (``encode(str, 'latin1')``), and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode of a {type(text).__name__} to {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args):
    """``bytes()``, as Python 3 pickles ``b""`` at protocols 0-2, and nothing more."""
    if args:
        raise pickle.UnpicklingError("bytes() of arguments")
    return b""


def _cifar_globals() -> dict:
    """(module, name) -> object: every global a CIFAR python batch may name (dicts, lists, bytes,
    str and ints need none): a numpy array as pickled by numpy 1.x (``numpy.core``) or 2.x
    (``numpy._core``) at protocols 0-4 (``_reconstruct``, ``ndarray``, ``dtype``) or 5
    (``_frombuffer``), and bytes as Python 3 pickles them at protocols 0-2 (``_codecs.encode``; ``b""``:
    ``bytes()``)."""
    if int(np.__version__.split(".")[0]) >= 2:
        from numpy._core import multiarray, numeric
    else:  # numpy 1.x
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes,
               ("builtins", "bytes"): _empty_bytes, ("__builtin__", "bytes"): _empty_bytes}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global its reader does not allow; ``args[0]`` is ``module.name``."""


class AllowListUnpickler(pickle.Unpickler):
    """Unpickles files of a known content and nothing else: ``find_class`` answers only the
    globals of ``allowed`` ((module, name) -> object), so a crafted file cannot run code on load;
    any other global raises :class:`RefusedGlobal`. (The CIFAR batches here, the seed's pickled
    DeepCluster weights in utils/methods/deepcluster.py.)"""

    def __init__(self, file, allowed: Mapping, **kwargs):
        super().__init__(file, **kwargs)
        self.allowed = allowed

    def find_class(self, module, name):
        found = self.allowed.get((module, name))
        if found is None:
            raise RefusedGlobal(f"{module}.{name}")
        return found


def _cifar_problem(batch, label_key: bytes, classes: int) -> str | None:
    """What keeps ``batch`` from being a CIFAR batch (None: nothing): a dict with ``b"data"``, an
    N x 3072 uint8 array (N >= 1), and ``label_key``, N labels 0..classes-1."""
    if not isinstance(batch, dict):
        return f"it holds a {type(batch).__name__}, not a dict"
    data, labels = batch.get(b"data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or not len(data) \
            or data.dtype != np.uint8:
        found = f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else \
            "missing" if data is None else f"a {type(data).__name__}"
        return f"its b'data' is {found}, not N x 3072 uint8"
    try:
        codes = np.asarray(labels) if isinstance(labels, (list, np.ndarray)) else None
    except (ValueError, TypeError, OverflowError):
        codes = None
    if codes is None or codes.shape != (len(data),) or not np.issubdtype(codes.dtype, np.integer) \
            or codes.min() < 0 or codes.max() >= classes:
        return f"its {label_key!r} is not {len(data)} labels 0..{classes - 1} (one per image)"
    return None


def read_cifar(folder: str, files: Sequence[str], label_key: bytes, classes: int) -> TensorImages:
    """The CIFAR python batches ``files`` of ``folder`` (unpickled by :class:`AllowListUnpickler` with
    :func:`_cifar_globals`; each
    checked to be a dict of N x 3072 uint8 ``b"data"`` and N ``label_key`` labels 0..classes-1)."""
    fix = f"delete {one_line(folder)} and pass --download"
    images, labels = [], []
    for name in files:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as fh:
                batch = AllowListUnpickler(fh, _cifar_globals(), encoding="bytes").load()
        except RefusedGlobal as exc:
            raise UserError(f"{one_line(path)} holds a {one_line(exc.args[0])[:100]} object, not CIFAR data; {fix}") \
                from None
        except Exception as exc:  # a corrupt or crafted file can fail in any way
            raise UserError(f"cannot read {one_line(path)} ({type(exc).__name__}: {one_line(exc)[:200]}); {fix}") \
                from None
        problem = _cifar_problem(batch, label_key, classes)
        if problem:
            raise UserError(f"{one_line(path)} is not CIFAR data: {problem}; {fix}")
        images.append(batch[b"data"].reshape(-1, 3, 32, 32))
        labels.extend(np.asarray(batch[label_key], dtype=np.int64).tolist())
    return TensorImages(torch.from_numpy(np.concatenate(images)), labels)


def read_svhn(path: str) -> TensorImages:
    """An SVHN ``.mat`` file: ``X`` of 32 x 32 x 3 x N uint8 images, ``y`` of N labels 1..10. The
    shapes it declares are checked against the in-memory budget before it is inflated (a small
    compressed file can declare gigabytes); a malformed file is one line naming it."""
    from scipy.io import loadmat, whosmat

    fix = "delete it and pass --download"
    try:
        declared = {name: shape for name, shape, _kind in whosmat(path)}
        problem = _svhn_shape_problem(declared)
        mat = None if problem else loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # a corrupt or crafted file can fail in any way
        raise UserError(f"cannot read {one_line(path)} ({type(exc).__name__}: {one_line(exc)[:200]}); {fix}") \
            from None
    if mat is not None and (mat["X"].dtype != np.uint8 or mat["y"].dtype.kind not in "iuf"
                            or not np.isin(mat["y"], np.arange(11)).all()):
        problem = f"X is {mat['X'].dtype} (expected uint8) or y holds labels outside 0..10"
    if problem:
        raise UserError(f"{one_line(path)} is not SVHN data: {problem}; {fix}")
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
    return TensorImages(images, mat["y"].reshape(-1).astype(np.int64) % 10)  # label 10 is the digit 0


def _svhn_shape_problem(declared: dict) -> str | None:
    """What is wrong with the arrays an SVHN file declares ({name: shape}), or None."""
    if "X" not in declared or "y" not in declared:
        return f"it holds {', '.join(sorted(declared)) or 'no arrays'}, not X and y"
    images, labels = tuple(declared["X"]), tuple(declared["y"])
    if len(images) != 4 or images[:3] != (32, 32, 3):
        return f"X is {'x'.join(map(str, images))}, not 32x32x3xN"
    if int(np.prod(labels)) != images[3] or max(labels, default=0) != images[3]:
        return f"y is {'x'.join(map(str, labels))}, not one label per image of X ({images[3]})"
    if images[3] * 32 * 32 * 3 > CACHE_BYTES:
        return (f"X declares {images[3]:,} images ({images[3] * 3072 / 2**30:.1f} GB), over the "
                f"{CACHE_BYTES / 2**30:.0f} GB in-memory budget")
    return None


def read_mnist(root: str, train: bool, dataset: str = "MNIST") -> TensorImages:
    """torchvision's reader ``dataset`` (MNIST, FashionMNIST: the same idx files under
    ``<root>/<dataset>/raw``) of one split, as a uint8 ``[N, 1, 28, 28]`` tensor. A malformed file,
    or a ``processed/*.pt`` holding anything but tensors (torchvision prefers that old layout),
    is one line naming it."""
    fix = f"delete {one_line(os.path.join(root, dataset))} and pass --download"
    try:
        split = getattr(torchvision_datasets(), dataset)(root, train=train)
    except Exception as exc:  # a corrupt or crafted file can fail in any way
        raise UserError(f"cannot read {one_line(_mnist_culprit(root, train, dataset))} ({type(exc).__name__}: "
                        f"{one_line(load_failure(exc))[:200]}); {fix}") from None
    data, targets = split.data, split.targets
    if not (isinstance(data, torch.Tensor) and isinstance(targets, torch.Tensor) and data.dtype == torch.uint8
            and data.dim() == 3 and targets.dim() == 1 and len(data) == len(targets)
            and ((targets >= 0) & (targets < 10)).all()):
        raise UserError(f"{one_line(_mnist_culprit(root, train, dataset))} is not {dataset} data (expected N x 28 x "
                        f"28 uint8 images and N labels 0..9); {fix}")
    return TensorImages(data[:, None].contiguous(), targets)


def _mnist_culprit(root: str, train: bool, dataset: str) -> str:
    """The file of ``dataset``'s split that torchvision read: its old ``processed/`` file when both
    of them exist (torchvision prefers them), else the raw images file, or the raw labels file
    when the images read."""
    from torchvision.datasets.mnist import read_image_file

    processed = [os.path.join(root, dataset, "processed", name) for name in ("training.pt", "test.pt")]
    if all(os.path.exists(p) for p in processed):
        return processed[0 if train else 1]
    prefix = os.path.join(root, dataset, "raw", "train" if train else "t10k")
    try:
        read_image_file(f"{prefix}-images-idx3-ubyte")
    except Exception:
        return f"{prefix}-images-idx3-ubyte"
    return f"{prefix}-labels-idx1-ubyte"
