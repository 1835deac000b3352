"""Dataset registry shared by every script.

Every dataset is loaded as fixed-size uint8 images (``[C, H, W]``) plus integer labels.
Normalisation and augmentation run afterwards on whole batches on the training device
(:class:`BatchTransform`), so the same indices can be read through two views: ``train_view``
(augmenting) for training and ``eval_view`` (plain) for testing and pool scoring.

Names: cifar10, cifar100, svhn, mnist (torchvision formats under the data root), caltech101
(``101_ObjectCategories``), tinyimagenet (``tiny-imagenet-200``), digits (scikit-learn, built
in) and ``folder:PATH`` (``PATH/train/<class>/*`` and ``PATH/test/<class>/*``).
"""

import os
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.core.cli import UserError
from utils.core.splits import balanced_subset

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # TOD's constants
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLIT_SEED = 0  # fixed seed of the digits and Caltech-101 train/test splits


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
    """Images read from files on demand: RGB, resized to ``resize`` x ``resize``, then
    centre-cropped to ``crop`` (both ``None`` = keep the file's size, which must then match)."""

    def __init__(self, paths, targets, resize=None, crop=None):
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.resize, self.crop = resize, crop or resize

    def __len__(self):
        return len(self.paths)

    def load(self, i):
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as img:
                img = img.convert("RGB")
                if self.resize:
                    img = img.resize((self.resize, self.resize), Image.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except OSError as exc:
            raise UserError(f"cannot read image {self.paths[i]}: {exc}") from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.crop and self.crop != image.shape[-1]:
            top = (image.shape[-2] - self.crop) // 2
            left = (image.shape[-1] - self.crop) // 2
            image = image[:, top:top + self.crop, left:left + self.crop]
        return image

    def __getitems__(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        images = torch.stack([self.load(int(i)) for i in indices])
        return images, self.targets[indices], indices


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

    def forward(self, images):
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

    @property
    def train_targets(self):
        return self.train.targets.numpy()

    def resize_inputs(self, size):
        """Feed the model ``size`` x ``size`` images (bilinear, after augmentation)."""
        self.train_transform.size = self.eval_transform.size = self.image_size = size
        return self

    def to(self, device):
        self.train_transform.to(device)
        self.eval_transform.to(device)
        return self


@dataclass
class _Raw:
    train: Dataset
    test: Dataset
    channels: int
    image_size: int
    mean: tuple
    std: tuple
    crop_padding: int = 0
    flip: bool = False


def _missing(what, path):
    return UserError(f"{what} not found: expected {path}; pass --download to fetch it"
                     " (needs a network), or --data-root DIR to point at it")


def _download(name, root):
    """Fetch a dataset with torchvision's downloader (needs a network)."""
    import torchvision.datasets as tvd

    if name == "cifar10":
        tvd.CIFAR10(root, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(root, download=True)
    elif name == "svhn":
        for split in ("train", "test"):
            tvd.SVHN(os.path.join(root, "svhn"), split=split, download=True)
    elif name == "mnist":
        tvd.MNIST(root, download=True)


def _read_cifar(folder, files, label_key):
    import pickle

    images, labels = [], []
    for name in files:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise UserError(f"cannot read {path} ({exc}); delete {folder} and pass --download") from None
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[label_key])
    return TensorImages(torch.from_numpy(np.concatenate(images)), labels)


def _read_svhn(path):
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({exc}); delete it and pass --download") from None
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
    return TensorImages(images, mat["y"].reshape(-1).astype(np.int64) % 10)  # label 10 is the digit 0


def _read_mnist(root, train):
    import torchvision.datasets as tvd

    split = tvd.MNIST(root, train=train)
    return TensorImages(split.data[:, None].contiguous(), split.targets)


_TORCHVISION_LAYOUT = {  # name -> (files that must exist under the data root, reader)
    "cifar10": (["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"], lambda root: (
        _read_cifar(os.path.join(root, "cifar-10-batches-py"), [f"data_batch_{i}" for i in range(1, 6)], b"labels"),
        _read_cifar(os.path.join(root, "cifar-10-batches-py"), ["test_batch"], b"labels"))),
    "cifar100": (["cifar-100-python/train", "cifar-100-python/test"], lambda root: (
        _read_cifar(os.path.join(root, "cifar-100-python"), ["train"], b"fine_labels"),
        _read_cifar(os.path.join(root, "cifar-100-python"), ["test"], b"fine_labels"))),
    "svhn": (["svhn/train_32x32.mat", "svhn/test_32x32.mat"], lambda root: (
        _read_svhn(os.path.join(root, "svhn", "train_32x32.mat")),
        _read_svhn(os.path.join(root, "svhn", "test_32x32.mat")))),
    "mnist": (["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-images-idx3-ubyte"], lambda root: (
        _read_mnist(root, True), _read_mnist(root, False))),
}
_DEFAULTS = {  # name -> channels, size, mean, std, crop padding, flip (TOD's choices for CIFAR and SVHN)
    "cifar10": (3, 32, CIFAR_MEAN, CIFAR_STD, 4, True),
    "cifar100": (3, 32, CIFAR_MEAN, CIFAR_STD, 4, True),
    "svhn": (3, 32, (0.4310, 0.4302, 0.4463), (0.1965, 0.1984, 0.1992), 4, True),
    "mnist": (1, 28, (0.1307,), (0.3081,), 2, False),
}


def _load_torchvision_format(name, root, download, image_size):
    files, read = _TORCHVISION_LAYOUT[name]
    missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing and download:
        _download(name, root)
        missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise _missing(name, os.path.join(root, missing[0]))
    train, test = read(root)
    return _Raw(train, test, *_DEFAULTS[name])


def _load_digits(root, download, image_size):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))[:, None]
    train, test = train_test_split(np.arange(len(images)), test_size=0.2, stratify=digits.target,
                                   random_state=SPLIT_SEED)
    mean = float(images[train].float().mean() / 255)
    std = float(images[train].float().std() / 255)
    return _Raw(TensorImages(images[train], digits.target[train]), TensorImages(images[test], digits.target[test]),
                1, 8, (mean,), (std,), 1, False)


def _image_files(folder):
    from torchvision.datasets.folder import IMG_EXTENSIONS

    names = sorted(os.listdir(folder))
    return [os.path.join(folder, n) for n in names if n.lower().endswith(IMG_EXTENSIONS)]


def _load_caltech101(root, download, image_size):
    candidates = [os.path.join(root, "101_ObjectCategories"), os.path.join(root, "caltech101", "101_ObjectCategories")]
    if download and not any(map(os.path.isdir, candidates)):
        import torchvision.datasets as tvd

        tvd.Caltech101(root, download=True)
    folder = next((c for c in candidates if os.path.isdir(c)), None)
    if folder is None:
        raise _missing("caltech101", candidates[0])
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    classes = [c for c in classes if c != "BACKGROUND_Google"]  # TOD drops the background class
    rng = np.random.default_rng(SPLIT_SEED)
    split = {"train": ([], []), "test": ([], [])}
    for label, name in enumerate(classes):
        files = _image_files(os.path.join(folder, name))
        order = rng.permutation(len(files))
        cut = int(0.9 * len(files))  # per class 90 % train, 10 % test, as TOD
        for part, chosen in (("train", order[:cut]), ("test", order[cut:])):
            split[part][0].extend(files[i] for i in chosen)
            split[part][1].extend([label] * len(chosen))
    return _Raw(FileImages(*split["train"], resize=256, crop=224), FileImages(*split["test"], resize=256, crop=224),
                3, 224, (0.5020,) * 3, (1.0,) * 3, 0, True)


def _load_tinyimagenet(root, download, image_size):
    folder = os.path.join(root, "tiny-imagenet-200")
    if download and not os.path.isdir(folder):
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip", root)
    annotations = os.path.join(folder, "val", "val_annotations.txt")
    if not os.path.isfile(annotations):
        raise _missing("tinyimagenet", annotations)
    wnids = sorted(os.listdir(os.path.join(folder, "train")))
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
    return _Raw(FileImages(train_paths, train_labels), FileImages(test_paths, test_labels), 3, 64,
                (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 8, True)


def _load_folder(path, image_size):
    splits = {}
    for part in ("train", "test"):
        folder = os.path.join(path, part)
        if not os.path.isdir(folder):
            raise UserError(f"folder dataset: expected {folder}/<class>/<image files>")
        splits[part] = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    classes = splits["train"]
    unknown = sorted(set(splits["test"]) - set(classes))
    if unknown:
        raise UserError(f"folder dataset: test classes {unknown} have no folder under {path}/train")
    data = {}
    for part in ("train", "test"):
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = _image_files(os.path.join(path, part, name))
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise UserError(f"folder dataset: no images under {os.path.join(path, part)}")
        data[part] = FileImages(paths, labels, resize=image_size)
    return _Raw(data["train"], data["test"], 3, image_size, IMAGENET_MEAN, IMAGENET_STD, max(1, image_size // 8), True)


LOADERS = {
    **{name: partial(_load_torchvision_format, name) for name in _TORCHVISION_LAYOUT},
    "caltech101": _load_caltech101,
    "tinyimagenet": _load_tinyimagenet,
    "digits": _load_digits,
}


def list_datasets():
    return sorted(LOADERS) + ["folder:PATH"]


def build_data(name, root="./data", download=False, max_train_samples=None, max_test_samples=None,
               seed=0, image_size=32, mean=None, std=None, crop_padding=None, flip=None, pad_mode="constant",
               resize=None):
    """Load dataset ``name`` and wrap it in an :class:`ImageData`. ``mean``/``std``/
    ``crop_padding``/``flip`` override the dataset's defaults (a paper's own choices);
    ``resize`` resizes every batch (after augmentation) to what a model needs."""
    if name.startswith("folder:"):
        raw = _load_folder(name[len("folder:"):], image_size)
    elif name.lower() in LOADERS:
        name = name.lower()
        raw = LOADERS[name](root, download, image_size)
    else:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(list_datasets())}")
    data = ImageData(
        name=name, train=raw.train, test=raw.test,
        num_classes=int(raw.train.targets.max()) + 1, in_channels=raw.channels, image_size=resize or raw.image_size,
        train_transform=BatchTransform(mean or raw.mean, std or raw.std,
                                       raw.crop_padding if crop_padding is None else crop_padding,
                                       raw.flip if flip is None else flip, pad_mode, resize),
        eval_transform=BatchTransform(mean or raw.mean, std or raw.std, size=resize),
    )
    data.train_idx = np.arange(len(raw.train))
    data.test_idx = np.arange(len(raw.test))
    if max_train_samples and max_train_samples < len(raw.train):
        data.train_idx = balanced_subset(raw.train.targets.numpy(), max_train_samples, seed)
    if max_test_samples and max_test_samples < len(raw.test):
        data.test_idx = balanced_subset(raw.test.targets.numpy(), max_test_samples, seed)
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
    ``world``-th one on each rank. ``make_batches`` must give every rank the same list (draw from
    an RNG seeded by the epoch)."""

    def __init__(self, make_batches, rank=0, world=1):
        self.make_batches, self.rank, self.world = make_batches, rank, world
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(self.make_batches(self.epoch)[self.rank::self.world])

    def __len__(self):
        return len(self.make_batches(self.epoch)[self.rank::self.world])


def _collate(batch):
    return batch


def make_loader(dataset, indices, batch_size, shuffle=False, seed=0, dist=None, workers=0, pad=True):
    """A DataLoader over ``indices`` of ``dataset`` yielding ``(uint8 images, labels, indices)``;
    under torch.distributed each rank reads its shard."""
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    sampler = IndexSampler(indices, shuffle, seed, rank, world, pad)
    pin = bool(dist and dist.device.type == "cuda")
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=_collate, pin_memory=pin, persistent_workers=False)


def make_batch_loader(dataset, make_batches, dist=None, workers=0):
    """A DataLoader over the batches ``make_batches(epoch)`` returns (see BatchListSampler)."""
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    pin = bool(dist and dist.device.type == "cuda")
    return DataLoader(dataset, batch_sampler=BatchListSampler(make_batches, rank, world), num_workers=workers,
                      collate_fn=_collate, pin_memory=pin)


def forever(loader):
    """Endless batches from ``loader``, a new epoch (new shuffle) each pass."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def load_data(args, name, image_size=32, **transform_overrides):
    """``build_data`` from the common command-line flags."""
    return build_data(name, args.data_root, args.download, args.max_train_samples, args.max_test_samples,
                      args.seed, image_size, **transform_overrides)
