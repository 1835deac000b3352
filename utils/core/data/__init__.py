"""The data every script trains on, by job:

- ``images.py``: reading image files safely, :class:`TensorImages` and :class:`FileImages` (decoded once);
- ``transforms.py``: :class:`BatchTransform`, normalisation and augmentation of whole batches on the device;
- ``arrays.py``: readers of the datasets stored as arrays (CIFAR, SVHN, MNIST), each checking its file;
- ``datasets.py``: the dataset registry and its loaders, the bundle :class:`ImageData`, ``build_data``/``load_data``;
- ``loaders.py``: data loaders over dataset indices (samplers, fixed batch lists, endless and augmented batches);
- ``own_images.py``: the own-images layout ``folder:PATH`` with labeled/ and unlabeled/ (a person labels the pool).

The public names are importable from ``utils.core.data``.
"""

from utils.core.data.arrays import AllowListUnpickler, RefusedGlobal
from utils.core.data.datasets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageData,
    RawSplits,
    build_data,
    list_datasets,
    load_data,
    register_dataset,
    registered_datasets,
)
from utils.core.data.images import FileImages, TensorImages
from utils.core.data.loaders import (
    BatchListSampler,
    IndexSampler,
    augmented_batches,
    cycled_batches,
    forever,
    make_batch_loader,
    make_loader,
)
from utils.core.data.transforms import BatchTransform

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "AllowListUnpickler", "BatchListSampler",
    "BatchTransform", "FileImages", "ImageData", "IndexSampler", "RawSplits", "RefusedGlobal", "TensorImages",
    "augmented_batches", "build_data", "cycled_batches", "forever", "list_datasets", "load_data", "make_batch_loader",
    "make_loader", "register_dataset", "registered_datasets",
]
