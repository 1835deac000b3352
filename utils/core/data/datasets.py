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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.core.data.arrays import (
    AllowListUnpickler,
    RefusedGlobal,
    read_cifar,
    read_mnist,
    read_svhn,
    torchvision_datasets,
)
from utils.core.data.images import CACHE_BYTES, FileImages, TensorImages
from utils.core.data.own_images import OwnImages, class_folders, is_own_images, load_own_images
from utils.core.data.transforms import BatchTransform
from utils.core.errors import UserError
from utils.core.registry import Registry
from utils.core.splits import balanced_subset, long_tail_subset

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # TOD's constants
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)  # Fashion-MNIST's training set (the toolkit reuses MNIST's)
GTSRB_MEAN, GTSRB_STD = (0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629)  # the toolkit's
SPLIT_SEED = 0  # fixed seed of the digits and Caltech-101 train/test splits


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
    own: "OwnImages | None" = None  # folder:PATH with labeled/ and unlabeled/ (utils/core/data/own_images.py)
    decoded: bool = False  # image files decoded into memory (no data-loader workers needed)
    class_counts: list | None = None  # images per class of a long-tailed pool (IMBALANCE); None: not subsampled
    workers: int = 0  # data-loader worker processes of the run's loaders (load_data decides)

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


# TOD's choices for CIFAR and SVHN: random crop after 4 pixels of padding, horizontal flip

@register_dataset("cifar10")
def _load_cifar10(root: str, download: bool, image_size: int | None) -> RawSplits:
    """CIFAR-10 in torchvision's layout (``cifar-10-batches-py``): 32x32 RGB, 10 classes."""
    _require("cifar10", root, ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"], download,
             lambda: torchvision_datasets().CIFAR10(root, download=True))
    folder = os.path.join(root, "cifar-10-batches-py")
    return RawSplits(read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels", 10),
                     read_cifar(folder, ["test_batch"], b"labels", 10), 3, 32, CIFAR_MEAN, CIFAR_STD, 4, True)


@register_dataset("cifar100")
def _load_cifar100(root: str, download: bool, image_size: int | None) -> RawSplits:
    """CIFAR-100 in torchvision's layout (``cifar-100-python``): 32x32 RGB, 100 fine classes."""
    _require("cifar100", root, ["cifar-100-python/train", "cifar-100-python/test"], download,
             lambda: torchvision_datasets().CIFAR100(root, download=True))
    folder = os.path.join(root, "cifar-100-python")
    return RawSplits(read_cifar(folder, ["train"], b"fine_labels", 100),
                     read_cifar(folder, ["test"], b"fine_labels", 100), 3, 32, CIFAR_MEAN, CIFAR_STD, 4, True)


@register_dataset("svhn")
def _load_svhn(root: str, download: bool, image_size: int | None) -> RawSplits:
    """SVHN in torchvision's layout (``svhn/{train,test}_32x32.mat``): 32x32 RGB digits 0-9."""
    def fetch() -> None:
        for split in ("train", "test"):
            torchvision_datasets().SVHN(os.path.join(root, "svhn"), split=split, download=True)

    _require("svhn", root, ["svhn/train_32x32.mat", "svhn/test_32x32.mat"], download, fetch)
    return RawSplits(read_svhn(os.path.join(root, "svhn", "train_32x32.mat")),
                     read_svhn(os.path.join(root, "svhn", "test_32x32.mat")),
                     3, 32, (0.4310, 0.4302, 0.4463), (0.1965, 0.1984, 0.1992), 4, True)


@register_dataset("mnist")
def _load_mnist(root: str, download: bool, image_size: int | None) -> RawSplits:
    """MNIST in torchvision's raw layout (``MNIST/raw/*-idx3-ubyte``): 28x28 grey, 10 classes."""
    files = [f"MNIST/raw/{prefix}-{kind}-idx{dims}-ubyte" for prefix in ("train", "t10k")
             for kind, dims in (("images", 3), ("labels", 1))]
    _require("mnist", root, files, download, lambda: torchvision_datasets().MNIST(root, download=True))
    return RawSplits(read_mnist(root, True), read_mnist(root, False), 1, 28, (0.1307,), (0.3081,), 2, False)


@register_dataset("fashionmnist")
def _load_fashionmnist(root: str, download: bool, image_size: int | None) -> RawSplits:
    """Fashion-MNIST in torchvision's raw layout (``FashionMNIST/raw/*-ubyte``): 28x28 grey, 10
    classes; normalised with its own training-set statistics (the toolkit's MNIST values are its
    profile, config/deepal.py), flipped as the toolkit, no crop."""
    files = [f"FashionMNIST/raw/{prefix}-{kind}-idx{dims}-ubyte" for prefix in ("train", "t10k")
             for kind, dims in (("images", 3), ("labels", 1))]
    _require("fashionmnist", root, files, download, lambda: torchvision_datasets().FashionMNIST(root, download=True))
    return RawSplits(read_mnist(root, True, "FashionMNIST"), read_mnist(root, False, "FashionMNIST"), 1, 28,
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
        torchvision_datasets().Caltech101(root, download=True)
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

    samples = torchvision_datasets().GTSRB(root, split=part, download=True)._samples  # (path, class)
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
    ``PATH/test/<class>/`` (utils/core/data/own_images.py; ``manifest_out``: the run folder whose image
    list a resumed run reads); resized to ``image_size`` (default 32)."""
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


def load_data(cfg: Mapping, args, **options) -> ImageData:
    """``build_data`` from a run's settings (DATASET, IMAGE_SIZE, MAX_TRAIN_SAMPLES, IMBALANCE,
    MAX_TEST_SAMPLES when the script has it, SEED) and its --data-root, --download and --workers (None: image files are
    decoded in one thread per core, and the data loaders get no worker processes when the images
    fit in memory, else up to four); the data loaders' worker count goes into ``data.workers``;
    ``options``: build_data's other arguments."""
    cores = os.cpu_count() or 1
    max_test = cfg["MAX_TEST_SAMPLES"] if "MAX_TEST_SAMPLES" in cfg else None
    data = build_data(cfg["DATASET"], args.data_root, args.download, cfg["MAX_TRAIN_SAMPLES"], max_test,
                      cfg["SEED"], cfg["IMAGE_SIZE"],
                      threads=args.workers or cores, imbalance=cfg["IMBALANCE"] if "IMBALANCE" in cfg else None,
                      **options)
    data.workers = args.workers
    if args.workers is None:
        data.workers = 0 if data.decoded or not isinstance(data.train, FileImages) else min(4, cores)
    return data
