"""Dataset registry shared by every script.

Every dataset is loaded as fixed-size uint8 images (``[C, H, W]``) plus integer labels.
Normalisation and augmentation run afterwards on whole batches on the training device
(:class:`BatchTransform`), so the same indices can be read through two views: ``train_view``
(augmenting) for training and ``eval_view`` (plain) for testing and pool scoring.

Names: cifar10, cifar100, svhn, mnist, fashionmnist (torchvision formats under the data root),
caltech101 (``101_ObjectCategories``), tinyimagenet (``tiny-imagenet-200``), gtsrb
(``gtsrb/{train,test}/<class>/``), digits (scikit-learn, built in) and ``folder:PATH``
(``PATH/train/<class>/*`` and ``PATH/test/<class>/*``).

Adding a dataset is one loader ``fn(root, download, image_size) -> RawSplits`` registered with
``@register_dataset(name)`` in this module (``image_files=True`` when it is decoded from image
files, so that IMAGE_SIZE applies); ``build_data`` and ``list_datasets`` then know it, and
tests/test_data.py asks for a fake copy of its on-disk layout.
"""

import os
import pickle
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from utils.core.cli import UserError
from utils.core.registry import Registry
from utils.core.splits import balanced_subset, long_tail_subset

if TYPE_CHECKING:
    from utils.core.annotation import OwnImages

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # TOD's constants
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)  # Fashion-MNIST's training set (the toolkit reuses MNIST's)
GTSRB_MEAN, GTSRB_STD = (0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629)  # the toolkit's
SPLIT_SEED = 0  # fixed seed of the digits and Caltech-101 train/test splits
CACHE_BYTES = 8 * 2**30  # decoded image files are kept in memory up to this size


# ----------------------------------------------------------------------------- reading user files

def one_line(text) -> str:
    """``text`` (a path, an exception) for a one-line message: line breaks and other unprintable
    characters escaped."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_OPEN_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide: one Image.open at a time under it


def open_image(path: str):
    """``PIL.Image.open(path)`` (the header only: pixels are decoded later), refusing with one line
    an image of more pixels than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    PIL raises only above twice the limit and merely warns between; here both are refused the
    same way, with no Python warning printed."""
    from PIL import Image

    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise UserError(_bomb_message(path, exc)) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        img.close()
        raise UserError(_bomb_message(path, img.size))
    return img


def _bomb_message(path: str, size) -> str:
    """The refusal of image ``path``: ``size`` is its (width, height), or the DecompressionBombError
    PIL raised for it (whose message gives the pixel count: "Image size (N pixels) exceeds ...")."""
    from PIL import Image

    if isinstance(size, BaseException):
        shown = str(size).partition("(")[2].partition(" ")[0] or "too many"
    else:
        shown = f"{size[0]}x{size[1]}"
    limit = f" ({Image.MAX_IMAGE_PIXELS:,} pixels)" if Image.MAX_IMAGE_PIXELS else ""
    return (f"image {one_line(path)} is {one_line(shown)} pixels, over PIL's decompression-bomb limit{limit}; "
            "shrink it or remove it")


# ----------------------------------------------------------------------------- datasets

class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor ``[N, C, H, W]``; batches are one gather."""

    def __init__(self, images, targets):
        self.images = images
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)

    def __len__(self):
        return len(self.targets)

    def __getitems__(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self.images[indices], self.targets[indices], indices


class FileImages(Dataset):
    """Images read from files: RGB, resized to ``resize`` x ``resize``, then centre-cropped to
    ``crop`` (both ``None`` = keep the file's size, which must then match). Each image is decoded
    once: :meth:`decode` fills one uint8 tensor with the images in use when they take at most
    ``cache_bytes`` (the default budget suits every supported dataset at its default size); images
    outside it are decoded on demand and kept too."""

    def __init__(self, paths: list, targets, resize: int | None = None, crop: int | None = None,
                 cache_bytes: int = CACHE_BYTES):
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.resize, self.crop = resize, crop or resize
        self.cache_bytes = cache_bytes
        self.cache, self.decoded = None, torch.zeros(len(self.paths), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` decoded from its file, ``[3, H, W]`` uint8."""
        from PIL import Image

        path = self.paths[i]
        try:
            with open_image(path) as img:
                img = img.convert("RGB")
                if self.resize:
                    img = img.resize((self.resize, self.resize), Image.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError as exc:  # a frame or tile over the limit, found while decoding
            raise UserError(_bomb_message(path, exc)) from None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read image {one_line(path)}: {one_line(exc)}; fix or remove the file") from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.crop and self.crop != image.shape[-1]:
            top = (image.shape[-2] - self.crop) // 2
            left = (image.shape[-1] - self.crop) // 2
            image = image[:, top:top + self.crop, left:left + self.crop]
        return image

    def verify(self, i: int) -> None:
        """Check that image ``i`` opens as an image (its header; no full decode)."""
        path = self.paths[i]
        try:
            with open_image(path) as img:
                img.verify()
        except (OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"cannot read image {one_line(path)}: {one_line(exc)}; fix or remove the file") from None

    def decode(self, indices, threads: int = 1) -> bool:
        """Decode the images ``indices`` now, in ``threads`` threads (PIL decodes without the
        GIL), into the cache when all of this dataset's images fit in ``cache_bytes``; otherwise
        only check that each opens. Returns whether they are cached. An unreadable file stops
        with its name, before anything is written."""
        from concurrent.futures import ThreadPoolExecutor

        todo = np.unique(np.asarray(indices, dtype=np.int64))
        if not len(todo):
            return False
        with ThreadPoolExecutor(max(1, threads)) as pool:
            if not self._cache_fits(int(todo[0])):
                list(pool.map(self.verify, todo.tolist()))
                return False
            todo = todo[~self.decoded[todo].numpy()]
            shape = self.cache.shape[1:]
            for i, image in zip(todo.tolist(), pool.map(self.load, todo.tolist())):
                if image.shape != shape:
                    raise UserError(f"image {self.paths[i]} is {tuple(image.shape[1:])} pixels, the others "
                                    f"{tuple(shape[1:])}: set IMAGE_SIZE to resize them all")
                self.cache[i], self.decoded[i] = image, True
        return True

    def _cache_fits(self, i: int) -> bool:
        """Whether every image fits in ``cache_bytes`` (judged from image ``i``); the first time it
        does, the cache is allocated, holding image ``i``."""
        if self.cache is None:
            first = self.load(i)
            if len(self.paths) * first.numel() > self.cache_bytes:
                return False
            self.cache = torch.empty((len(self.paths), *first.shape), dtype=torch.uint8)
            self.cache[i], self.decoded[i] = first, True
        return True

    def __getitems__(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        if not len(indices) or not self._cache_fits(int(indices[0])):
            return torch.stack([self.load(int(i)) for i in indices]), self.targets[indices], indices
        for i in indices[~self.decoded[indices]].unique().tolist():
            self.cache[i], self.decoded[i] = self.load(i), True
        return self.cache[indices], self.targets[indices], indices


# ----------------------------------------------------------------------------- transforms

class BatchTransform(nn.Module):
    """uint8 batch -> normalised float batch, with optional random crop (zero or reflect
    padding) and horizontal flip, drawn per sample from the global torch RNG, and an optional
    bilinear resize to ``size`` x ``size`` (for models made for another input size)."""

    def __init__(self, mean, std, crop_padding=0, flip=False, pad_mode="constant", size=None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.crop_padding, self.flip, self.pad_mode, self.size = crop_padding, flip, pad_mode, size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        n, _, h, w = x.shape
        if self.crop_padding:
            p = self.crop_padding
            padded = nn.functional.pad(x, (p, p, p, p), mode=self.pad_mode)
            offsets = torch.randint(0, 2 * p + 1, (2, n)).to(x.device)
            rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.flip:
            flip = (torch.rand(n) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.size and self.size != w:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


# ----------------------------------------------------------------------------- the bundle

@dataclass
class ImageData:
    """A dataset ready for active learning. ``train_idx``/``test_idx`` are the indices in use
    (all, or a class-balanced subset); every index anywhere refers to the full split."""

    name: str
    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    train_transform: BatchTransform
    eval_transform: BatchTransform
    train_idx: np.ndarray = field(default=None)
    test_idx: np.ndarray = field(default=None)
    own: "OwnImages | None" = None  # folder:PATH with labeled/ and unlabeled/ (utils/core/annotation.py)
    decoded: bool = False  # image files decoded into memory (no data-loader workers needed)
    class_counts: list | None = None  # images per class of a long-tailed pool (IMBALANCE); None: not subsampled

    @property
    def train_targets(self) -> np.ndarray:
        return self.train.targets.numpy()

    def resize_inputs(self, size: int) -> "ImageData":
        """Feed the model ``size`` x ``size`` images (bilinear, after augmentation)."""
        self.train_transform.size = self.eval_transform.size = self.image_size = size
        return self

    def to(self, device) -> "ImageData":
        self.train_transform.to(device)
        self.eval_transform.to(device)
        return self


@dataclass
class RawSplits:
    """What a dataset loader returns: the ``train`` and ``test`` splits (datasets with ``targets``, a
    long tensor of labels 0..C-1, and ``__getitems__`` giving uint8 ``[N, C, H, W]`` images, e.g.
    :class:`TensorImages` or :class:`FileImages`), the images' ``channels`` and side ``image_size``,
    the per-channel ``mean``/``std`` of their normalisation (on the 0..1 scale), and the training
    augmentation: random crop after ``crop_padding`` pixels of padding (0: none), horizontal ``flip``."""

    train: Dataset
    test: Dataset
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    own: "OwnImages | None" = None


DatasetLoader = Callable[[str, bool, int | None], RawSplits]  # (root, download, image_size) -> RawSplits
Loader = TypeVar("Loader", bound=DatasetLoader)


class RegisteredDataset(NamedTuple):
    """A registered dataset: its ``loader`` and whether it is decoded from ``image_files``
    (then IMAGE_SIZE, the side the files are decoded to, applies)."""

    loader: DatasetLoader
    image_files: bool


_DATASETS = Registry("dataset")  # name -> RegisteredDataset


def register_dataset(name: str, *, image_files: bool = False) -> Callable[[Loader], Loader]:
    """Register the decorated ``loader(root, download, image_size) -> RawSplits`` under ``name``
    (lower-cased; build_data looks names up in any case). ``root`` is the data root, ``download``
    allows fetching the files when missing (else stop with :func:`_missing`'s hint), ``image_size``
    is None (the dataset's own size) or, only for ``image_files=True``, the side to decode image
    files to. A name registered twice, or starting with ``folder:``, raises ValueError; the loader
    is returned unchanged."""
    key = name.lower()
    if not key or key.startswith("folder:"):
        raise ValueError(f"dataset name {name!r} is empty or takes the reserved prefix 'folder:'")

    def decorate(loader: Loader) -> Loader:
        _DATASETS.add(key, RegisteredDataset(loader, image_files))
        return loader
    return decorate


def registered_datasets() -> Mapping[str, RegisteredDataset]:
    """The registered datasets by name (a read-only view; ``folder:PATH`` is not among them)."""
    return MappingProxyType(_DATASETS)


def list_datasets() -> list[str]:
    """The registered names (sorted), then ``folder:PATH``."""
    return sorted(_DATASETS) + ["folder:PATH"]


def _missing(what: str, path: str) -> UserError:
    return UserError(f"{what} not found: expected {path}; pass --download to fetch it"
                     " (needs a network), or --data-root DIR to point at it")


def _require(name: str, root: str, files: Sequence[str], download: bool, fetch: Callable[[], object]) -> None:
    """Make sure ``files`` (relative to ``root``) exist: ``fetch()`` them first when some are missing
    and ``download`` is set; stop with the download hint naming the first missing one."""
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing and download:
        fetch()
        missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise _missing(name, os.path.join(root, missing[0]))


def _torchvision_datasets():
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


def _read_cifar(folder: str, files: Sequence[str], label_key: bytes, classes: int) -> TensorImages:
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


def _read_svhn(path: str) -> TensorImages:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc}); delete it and pass --download") from None
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
    return TensorImages(images, mat["y"].reshape(-1).astype(np.int64) % 10)  # label 10 is the digit 0


def _read_mnist(root: str, train: bool, dataset: str = "MNIST") -> TensorImages:
    """torchvision's reader ``dataset`` (MNIST, FashionMNIST: the same idx files under
    ``<root>/<dataset>/raw``) of one split, as a uint8 ``[N, 1, 28, 28]`` tensor."""
    split = getattr(_torchvision_datasets(), dataset)(root, train=train)
    return TensorImages(split.data[:, None].contiguous(), split.targets)


# TOD's choices for CIFAR and SVHN: random crop after 4 pixels of padding, horizontal flip

@register_dataset("cifar10")
def _load_cifar10(root: str, download: bool, image_size: int | None) -> RawSplits:
    """CIFAR-10 in torchvision's layout (``cifar-10-batches-py``): 32x32 RGB, 10 classes."""
    _require("cifar10", root, ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"], download,
             lambda: _torchvision_datasets().CIFAR10(root, download=True))
    folder = os.path.join(root, "cifar-10-batches-py")
    return RawSplits(_read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels", 10),
                     _read_cifar(folder, ["test_batch"], b"labels", 10), 3, 32, CIFAR_MEAN, CIFAR_STD, 4, True)


@register_dataset("cifar100")
def _load_cifar100(root: str, download: bool, image_size: int | None) -> RawSplits:
    """CIFAR-100 in torchvision's layout (``cifar-100-python``): 32x32 RGB, 100 fine classes."""
    _require("cifar100", root, ["cifar-100-python/train", "cifar-100-python/test"], download,
             lambda: _torchvision_datasets().CIFAR100(root, download=True))
    folder = os.path.join(root, "cifar-100-python")
    return RawSplits(_read_cifar(folder, ["train"], b"fine_labels", 100),
                     _read_cifar(folder, ["test"], b"fine_labels", 100), 3, 32, CIFAR_MEAN, CIFAR_STD, 4, True)


@register_dataset("svhn")
def _load_svhn(root: str, download: bool, image_size: int | None) -> RawSplits:
    """SVHN in torchvision's layout (``svhn/{train,test}_32x32.mat``): 32x32 RGB digits 0-9."""
    def fetch() -> None:
        for split in ("train", "test"):
            _torchvision_datasets().SVHN(os.path.join(root, "svhn"), split=split, download=True)

    _require("svhn", root, ["svhn/train_32x32.mat", "svhn/test_32x32.mat"], download, fetch)
    return RawSplits(_read_svhn(os.path.join(root, "svhn", "train_32x32.mat")),
                     _read_svhn(os.path.join(root, "svhn", "test_32x32.mat")),
                     3, 32, (0.4310, 0.4302, 0.4463), (0.1965, 0.1984, 0.1992), 4, True)


@register_dataset("mnist")
def _load_mnist(root: str, download: bool, image_size: int | None) -> RawSplits:
    """MNIST in torchvision's raw layout (``MNIST/raw/*-idx3-ubyte``): 28x28 grey, 10 classes."""
    files = [f"MNIST/raw/{prefix}-{kind}-idx{dims}-ubyte" for prefix in ("train", "t10k")
             for kind, dims in (("images", 3), ("labels", 1))]
    _require("mnist", root, files, download, lambda: _torchvision_datasets().MNIST(root, download=True))
    return RawSplits(_read_mnist(root, True), _read_mnist(root, False), 1, 28, (0.1307,), (0.3081,), 2, False)


@register_dataset("fashionmnist")
def _load_fashionmnist(root: str, download: bool, image_size: int | None) -> RawSplits:
    """Fashion-MNIST in torchvision's raw layout (``FashionMNIST/raw/*-ubyte``): 28x28 grey, 10
    classes; normalised with its own training-set statistics (the toolkit's MNIST values are its
    profile, config/deepal.py), flipped as the toolkit, no crop."""
    files = [f"FashionMNIST/raw/{prefix}-{kind}-idx{dims}-ubyte" for prefix in ("train", "t10k")
             for kind, dims in (("images", 3), ("labels", 1))]
    _require("fashionmnist", root, files, download, lambda: _torchvision_datasets().FashionMNIST(root, download=True))
    return RawSplits(_read_mnist(root, True, "FashionMNIST"), _read_mnist(root, False, "FashionMNIST"), 1, 28,
                     FASHION_MEAN, FASHION_STD, 0, True)


@register_dataset("digits")
def _load_digits(root: str, download: bool, image_size: int | None) -> RawSplits:
    """scikit-learn's 8x8 digits (built in, no files): a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))[:, None]
    train, test = train_test_split(np.arange(len(images)), test_size=0.2, stratify=digits.target,
                                   random_state=SPLIT_SEED)
    mean = float(images[train].float().mean() / 255)
    std = float(images[train].float().std() / 255)
    return RawSplits(TensorImages(images[train], digits.target[train]),
                     TensorImages(images[test], digits.target[test]), 1, 8, (mean,), (std,), 1, False)


def _visible(folder: str, dirs: bool = False) -> list[str]:
    """Sorted names in ``folder`` (its sub-folders with ``dirs``), hidden ones (.DS_Store, ._img.jpg,
    .ipynb_checkpoints) left out."""
    return sorted(n for n in os.listdir(folder) if not n.startswith(".") and
                  (not dirs or os.path.isdir(os.path.join(folder, n))))


def _image_files(folder: str) -> list[str]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return [os.path.join(folder, n) for n in _visible(folder) if n.lower().endswith(IMG_EXTENSIONS)]


@register_dataset("caltech101", image_files=True)
def _load_caltech101(root: str, download: bool, image_size: int | None) -> RawSplits:
    """Caltech-101 (``101_ObjectCategories``, also under ``caltech101/``) without its background
    class, split 90/10 per class from a fixed seed; resized and centre-cropped to ``image_size``
    (default 224)."""
    candidates = [os.path.join(root, "101_ObjectCategories"), os.path.join(root, "caltech101", "101_ObjectCategories")]
    if download and not any(map(os.path.isdir, candidates)):
        _torchvision_datasets().Caltech101(root, download=True)
    folder = next((c for c in candidates if os.path.isdir(c)), None)
    if folder is None:
        raise _missing("caltech101", candidates[0])
    classes = [c for c in _visible(folder, dirs=True) if c != "BACKGROUND_Google"]  # TOD drops the background class
    rng = np.random.default_rng(SPLIT_SEED)
    split = {"train": ([], []), "test": ([], [])}
    for label, name in enumerate(classes):
        files = _image_files(os.path.join(folder, name))
        order = rng.permutation(len(files))
        cut = int(0.9 * len(files))  # per class 90 % train, 10 % test, as TOD
        for part, chosen in (("train", order[:cut]), ("test", order[cut:])):
            split[part][0].extend(files[i] for i in chosen)
            split[part][1].extend([label] * len(chosen))
    crop = image_size or 224  # TOD: resize to 256, centre-crop 224 (the same ratio for other sizes)
    resize = round(crop * 256 / 224)
    return RawSplits(FileImages(*split["train"], resize=resize, crop=crop),
                     FileImages(*split["test"], resize=resize, crop=crop), 3, crop, (0.5020,) * 3, (1.0,) * 3, 0, True)


@register_dataset("tinyimagenet", image_files=True)
def _load_tinyimagenet(root: str, download: bool, image_size: int | None) -> RawSplits:
    """Tiny ImageNet (``tiny-imagenet-200``): train/<wnid>/images/*, and val/images/* labelled by
    ``val/val_annotations.txt`` as the test split; 64x64 files, resized to ``image_size`` if given."""
    folder = os.path.join(root, "tiny-imagenet-200")
    if download and not os.path.isdir(folder):
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip", root)
    annotations = os.path.join(folder, "val", "val_annotations.txt")
    if not os.path.isfile(annotations):
        raise _missing("tinyimagenet", annotations)
    wnids = _visible(os.path.join(folder, "train"), dirs=True)
    label_of = {w: i for i, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        files = _image_files(os.path.join(folder, "train", wnid, "images"))
        train_paths += files
        train_labels += [label_of[wnid]] * len(files)
    test_paths, test_labels = [], []
    with open(annotations) as fh:
        for line in fh:
            name, wnid = line.split("\t")[:2]
            test_paths.append(os.path.join(folder, "val", "images", name))
            test_labels.append(label_of[wnid])
    size = image_size or 64
    resize = None if size == 64 else size  # the files are 64x64
    return RawSplits(FileImages(train_paths, train_labels, resize), FileImages(test_paths, test_labels, resize), 3,
                     size, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), max(1, size // 8), True)


def _gtsrb_from_torchvision(root: str, part: str) -> None:
    """Download GTSRB split ``part`` with torchvision (into ``<root>/gtsrb/GTSRB/``; skipped when
    there) and lay it out as the toolkit reads it, ``<root>/gtsrb/<part>/<class, 00000..00042>/``:
    hard links to torchvision's files (copies across file systems), made in a hidden folder that is
    renamed into place once complete."""
    import shutil

    samples = _torchvision_datasets().GTSRB(root, split=part, download=True)._samples  # (path, class)
    partial = os.path.join(root, "gtsrb", f".{part}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted conversion
    for path, label in samples:
        target = os.path.join(partial, f"{int(label):05d}", os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    os.replace(partial, os.path.join(root, "gtsrb", part))


@register_dataset("gtsrb", image_files=True)
def _load_gtsrb(root: str, download: bool, image_size: int | None) -> RawSplits:
    """GTSRB as the toolkit reads it (torchvision's ImageFolder): ``gtsrb/{train,test}/<class>/``
    (43 classes, folders sorted by name; torchvision's listing, see class_folders); the images,
    of varying sizes, resized to ``image_size`` x ``image_size`` (default 32, the toolkit's Resize)
    when decoded; random crop after size/8 pixels of padding and flips (the toolkit's choice,
    although a flipped traffic sign can mean another sign). ``download``: torchvision's GTSRB,
    laid out so by :func:`_gtsrb_from_torchvision`."""
    from utils.core.annotation import class_folders

    folder = os.path.join(root, "gtsrb")
    for part in ("train", "test"):
        if download and not os.path.isdir(os.path.join(folder, part)):
            _gtsrb_from_torchvision(root, part)
        if not os.path.isdir(os.path.join(folder, part)):
            raise _missing("gtsrb", os.path.join(folder, part, "<class>", ""))
    classes, train_paths, train_labels = class_folders(folder, "train")
    _, test_paths, test_labels = class_folders(folder, "test", classes, reference="train")
    size = image_size or 32
    return RawSplits(FileImages([os.path.join(folder, p) for p in train_paths], train_labels, resize=size),
                     FileImages([os.path.join(folder, p) for p in test_paths], test_labels, resize=size), 3, size,
                     GTSRB_MEAN, GTSRB_STD, max(1, size // 8), True)


def _load_folder(path: str, image_size: int | None, own_images: bool, manifest_out: str | None) -> RawSplits:
    """``folder:PATH``: ``PATH/{train,test}/<class>/**`` (every image labeled; torchvision's listing,
    a class folder without images is an error, so is a test class absent from train), or with
    ``own_images`` the annotation layout ``PATH/labeled/<class>/``, ``PATH/unlabeled/**``, optional
    ``PATH/test/<class>/`` (utils/core/annotation.py; ``manifest_out``: the run folder whose image
    list a resumed run reads); resized to ``image_size`` (default 32)."""
    from utils.core.annotation import class_folders, is_own_images, load_own_images

    image_size = image_size or 32
    if is_own_images(path) != own_images:
        if own_images:
            raise UserError(f"--oracle human/folder need folder:PATH with {path}/labeled/<class>/ and "
                            f"{path}/unlabeled/ (see the README's 'Label your own images')")
        raise UserError(f"folder:{path} has labeled/ and unlabeled/ (images to label by hand): run it with main_al.py "
                        "--oracle human (or folder); other runs need PATH/train/<class>/ and PATH/test/<class>/")
    if own_images:
        own = load_own_images(path, manifest_out)
        train = FileImages(own.absolute(own.paths), np.maximum(own.labels, -1), resize=image_size)
        test = FileImages(own.absolute(own.test_paths), np.asarray(own.test_labels, dtype=np.int64),
                          resize=image_size)
        return RawSplits(train, test, 3, image_size, IMAGENET_MEAN, IMAGENET_STD, max(1, image_size // 8), True, own)
    for part in ("train", "test"):
        if not os.path.isdir(os.path.join(path, part)):
            raise UserError(f"folder dataset: expected {os.path.join(path, part)}/<class>/<image files>")
    classes, train_paths, train_labels = class_folders(path, "train")
    _, test_paths, test_labels = class_folders(path, "test", classes, reference="train")
    if len(classes) < 2:
        raise UserError(f"folder dataset: {os.path.join(path, 'train')} has one class folder; give at least two")
    return RawSplits(FileImages([os.path.join(path, p) for p in train_paths], train_labels, resize=image_size),
                     FileImages([os.path.join(path, p) for p in test_paths], test_labels, resize=image_size), 3,
                     image_size, IMAGENET_MEAN, IMAGENET_STD, max(1, image_size // 8), True)


def _decode(data: "ImageData", threads: int) -> None:
    """Decode the image files in use once, now (an unreadable file stops the run before it writes
    anything), and say where they are kept."""
    import time

    parts = [(d, idx) for d, idx in ((data.train, data.train_idx), (data.test, data.test_idx))
             if isinstance(d, FileImages) and len(idx)]
    if not parts:
        return
    start = time.perf_counter()
    cached = [d.decode(idx, threads) for d, idx in parts]
    data.decoded = all(cached)
    count = sum(len(idx) for _, idx in parts)
    if int(os.environ.get("RANK", "0")) == 0:
        if data.decoded:
            size = sum(d.cache.numel() for d, _ in parts) / 2**20
            shape = "x".join(map(str, parts[0][0].cache.shape[1:]))
            print(f"{count} images decoded once into memory ({shape}, {size:.0f} MB) in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        else:
            print(f"{count} images checked; they exceed the {CACHE_BYTES / 2**30:.0f} GB in-memory budget and are "
                  "decoded on demand (each kept once read)", flush=True)


def build_data(name: str, root: str = "./data", download: bool = False, max_train_samples: int | None = None,
               max_test_samples: int | None = None, seed: int = 0, image_size: int | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               crop_padding: int | None = None, flip: bool | None = None, pad_mode: str = "constant",
               resize: int | None = None, own_images: bool = False, manifest_out: str | None = None,
               threads: int = 1, imbalance: float | None = None) -> ImageData:
    """Load dataset ``name`` (a registered name in any case, or ``folder:PATH``) and wrap it in an
    :class:`ImageData`. ``image_size``: the side image files are decoded to (None: the dataset's
    own; refused for datasets not stored as image files); ``mean``/``std``/``crop_padding``/``flip``
    override the dataset's defaults (a paper's own choices); ``resize`` resizes every batch (after
    augmentation) to what a model needs; ``own_images`` and ``manifest_out``: see _load_folder;
    ``imbalance`` (a ratio >= 1) subsamples the training pool (after ``max_train_samples``) to the
    long-tailed profile of splits.long_tail_subset, the test set unchanged. Image files are decoded in
    ``threads`` threads."""
    if name.startswith("folder:"):
        raw = _load_folder(name[len("folder:"):], image_size, own_images, manifest_out)
    else:
        entry, name = _DATASETS.find(name, list_datasets()), name.lower()
        if image_size is not None and not entry.image_files:
            files = ["folder:", *sorted(n for n, e in _DATASETS.items() if e.image_files)]
            raise UserError(f"IMAGE_SIZE applies to image files ({', '.join(files)}); {name} is "
                            "stored at its own size: --set IMAGE_SIZE=None")
        raw = entry.loader(root, download, image_size)
    if mean is not None and len(mean) != raw.channels or std is not None and len(std) != raw.channels:
        raise UserError(f"MEAN and STD need {raw.channels} value(s) for {name}, one per channel")
    data = ImageData(
        name=name, train=raw.train, test=raw.test,
        num_classes=len(raw.own.classes) if raw.own else int(raw.train.targets.max()) + 1,
        in_channels=raw.channels, image_size=resize or raw.image_size,
        train_transform=BatchTransform(mean or raw.mean, std or raw.std,
                                       raw.crop_padding if crop_padding is None else crop_padding,
                                       raw.flip if flip is None else flip, pad_mode, resize),
        eval_transform=BatchTransform(mean or raw.mean, std or raw.std, size=resize), own=raw.own,
    )
    data.train_idx = np.arange(len(raw.train))
    data.test_idx = np.arange(len(raw.test))
    if max_train_samples and max_train_samples < len(raw.train):
        data.train_idx = balanced_subset(raw.train.targets.numpy(), max_train_samples, seed)
    if max_test_samples and max_test_samples < len(raw.test):
        data.test_idx = balanced_subset(raw.test.targets.numpy(), max_test_samples, seed)
    if imbalance is not None:
        if raw.own is not None:
            raise UserError("IMBALANCE (--imbalance) subsamples a labeled pool for a simulated oracle; images a "
                            "person labels are used as they are")
        data.train_idx, data.class_counts = long_tail_subset(raw.train.targets.numpy(), data.train_idx, imbalance,
                                                             seed)
    _decode(data, threads)
    return data


# ----------------------------------------------------------------------------- loaders

class IndexSampler(Sampler):
    """Yields the given dataset indices (not positions), shuffled per epoch from ``seed`` and
    ``set_epoch`` when asked, and sharded over ``world`` ranks (padded to equal length when
    ``pad``, as DistributedSampler)."""

    def __init__(self, indices, shuffle=False, seed=0, rank=0, world=1, pad=True):
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.shuffle, self.seed, self.rank, self.world, self.pad = shuffle, seed, rank, world, pad
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _order(self):
        order = self.indices
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = order[torch.randperm(len(order), generator=generator)]
        if self.world > 1 and self.pad and len(order) % self.world:
            extra = self.world - len(order) % self.world
            order = torch.cat([order, order[:extra]])
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self):
        return len(self._order())


class BatchListSampler(Sampler):
    """Yields the batches ``make_batches(epoch)`` returns (lists of dataset indices), every
    ``world``-th one on each rank, the list padded with its first batches to a multiple of
    ``world`` (as DistributedSampler pads indices) so every rank takes the same number of steps.
    ``make_batches`` must give every rank the same list (draw from an RNG seeded by the epoch)."""

    def __init__(self, make_batches, rank=0, world=1):
        self.make_batches, self.rank, self.world = make_batches, rank, world
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _mine(self) -> list:
        batches = self.make_batches(self.epoch)
        if self.world > 1 and len(batches) % self.world:
            batches = batches + batches[: self.world - len(batches) % self.world]
        return batches[self.rank::self.world]

    def __iter__(self):
        return iter(self._mine())

    def __len__(self):
        return len(self._mine())


def _collate(batch):
    return batch


class IndexBatches(BatchSampler):
    """``sampler``'s indices in batches of ``batch_size``; ``training`` leaves out a last batch of
    one image (a BatchNorm layer in training mode cannot normalise a single sample: the seeds
    crash there). ``set_epoch`` reaches the sampler."""

    def __init__(self, sampler: Sampler, batch_size: int, training: bool = False):
        super().__init__(sampler, batch_size, drop_last=False)
        self.training = training

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        for batch in super().__iter__():
            if len(batch) > 1 or not self.training:
                yield batch

    def __len__(self):
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (rest > 1 or (rest == 1 and not self.training))


def make_loader(dataset: Dataset, indices, batch_size: int, shuffle: bool = False, seed: int = 0, dist=None,
                workers: int = 0, pad: bool = True) -> DataLoader:
    """A DataLoader over ``indices`` of ``dataset`` yielding ``(uint8 images, labels, indices)``;
    under torch.distributed each rank reads its shard. ``shuffle`` makes it a training loader:
    reshuffled every epoch (``batch_sampler.set_epoch``), and a last batch of one image is left
    out (IndexBatches)."""
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    batches = IndexBatches(IndexSampler(indices, shuffle, seed, rank, world, pad), batch_size, training=shuffle)
    pin = bool(dist and dist.device.type == "cuda")
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers or 0, collate_fn=_collate,
                      pin_memory=pin, persistent_workers=False)


def make_batch_loader(dataset: Dataset, make_batches: Callable[[int], list], dist=None, workers: int = 0) -> DataLoader:
    """A DataLoader over the batches ``make_batches(epoch)`` returns (see BatchListSampler)."""
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    pin = bool(dist and dist.device.type == "cuda")
    return DataLoader(dataset, batch_sampler=BatchListSampler(make_batches, rank, world), num_workers=workers or 0,
                      collate_fn=_collate, pin_memory=pin)


def cycled_batches(rng: np.random.Generator, indices: np.ndarray, batches: int, size: int) -> np.ndarray:
    """``[batches, size]`` dataset indices from reshuffled passes over ``indices``, each pass a new
    permutation drawn from ``rng`` (a batch may span two passes; every batch is full)."""
    passes = max(1, -(-batches * size // len(indices)))
    return np.concatenate([rng.permutation(indices) for _ in range(passes)])[: batches * size].reshape(batches, size)


def forever(loader: DataLoader) -> Iterator:
    """Endless batches from ``loader``, a new epoch (new shuffle) each pass."""
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def augmented_batches(data: ImageData, indices: np.ndarray, batch_size: int, dist=None,
                      workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented batches ``(x, y)`` of ``indices`` on the training device, reshuffled every
    pass; the shuffle seed is drawn from numpy's global RNG when the first batch is asked for."""
    seed = np.random.randint(2**31)
    loader = make_loader(data.train, indices, batch_size, True, seed, dist, workers)
    device = dist.device if dist else torch.device("cpu")
    for images, targets, _ in forever(loader):
        yield data.train_transform(images.to(device)), targets.to(device)


def load_data(cfg: Mapping, args, **options) -> ImageData:
    """``build_data`` from a run's settings (DATASET, IMAGE_SIZE, MAX_TRAIN_SAMPLES, IMBALANCE,
    MAX_TEST_SAMPLES when the script has it, SEED) and its --data-root, --download and --workers (None: image files are
    decoded in one thread per core, and the data loaders get no worker processes when the images
    fit in memory, else up to four); ``options``: build_data's other arguments."""
    cores = os.cpu_count() or 1
    max_test = cfg["MAX_TEST_SAMPLES"] if "MAX_TEST_SAMPLES" in cfg else None
    data = build_data(cfg["DATASET"], args.data_root, args.download, cfg["MAX_TRAIN_SAMPLES"], max_test,
                      cfg["SEED"], cfg["IMAGE_SIZE"],
                      threads=args.workers or cores, imbalance=cfg["IMBALANCE"] if "IMBALANCE" in cfg else None,
                      **options)
    if args.workers is None:
        args.workers = 0 if data.decoded or not isinstance(data.train, FileImages) else min(4, cores)
    return data
