"""The dataset registry, splits, transforms and index samplers."""

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import make_caltech, make_cifar, make_mnist, make_svhn, make_tinyimagenet, write_images

from utils.core import data as data_module
from utils.core.cli import UserError
from utils.core.data import (
    BatchTransform,
    IndexSampler,
    RawSplits,
    TensorImages,
    build_data,
    list_datasets,
    make_loader,
    register_dataset,
    registered_datasets,
)
from utils.core.distributed import Dist
from utils.core.registry import Registry
from utils.core.splits import balanced_subset


def test_digits_is_a_fixed_stratified_80_20_split():
    first, second = build_data("digits"), build_data("digits")
    assert (len(first.train), len(first.test)) == (1437, 360)
    assert first.in_channels == 1 and first.image_size == 8 and first.num_classes == 10
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.targets, second.test.targets)
    counts = np.bincount(first.test.targets.numpy())
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 36 +- 1 per class
    assert first.train.images.dtype == torch.uint8 and first.train.images.max() == 255


def test_balanced_subset_is_seeded_and_class_balanced():
    targets = np.repeat(np.arange(4), [50, 50, 50, 3])
    chosen = balanced_subset(targets, 40, seed=1)
    assert np.array_equal(chosen, balanced_subset(targets, 40, seed=1))
    assert not np.array_equal(chosen, balanced_subset(targets, 40, seed=2))
    assert len(np.unique(chosen)) == 40
    counts = np.bincount(targets[chosen], minlength=4)
    assert counts[3] == 3 and sorted(counts[:3]) == [12, 12, 13]  # the short class gives all it has
    with pytest.raises(UserError):
        balanced_subset(targets, 1000, seed=0)


def test_max_samples_flags_take_balanced_subsets_of_full_split_indices():
    data = build_data("digits", max_train_samples=100, max_test_samples=50, seed=3)
    assert len(data.train_idx) == 100 and len(data.test_idx) == 50
    assert np.bincount(data.train_targets[data.train_idx]).tolist() == [10] * 10
    assert data.train_idx.max() > 100  # indices into the full training set, not positions


def test_folder_dataset_reads_class_folders_of_any_size(tmp_path):
    for part, n in (("train", 3), ("test", 2)):
        write_images(tmp_path / part / "cat", n, (20, 12))
        write_images(tmp_path / part / "dog", n, (7, 9), seed=1)
    data = build_data(f"folder:{tmp_path}", image_size=16)
    assert data.num_classes == 2 and data.in_channels == 3 and data.image_size == 16
    images, targets, indices = data.train.__getitems__([0, 4])
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    assert targets.tolist() == [0, 1] and indices.tolist() == [0, 4]
    assert len(data.test) == 4


def test_folder_dataset_errors_name_the_layout(tmp_path):
    with pytest.raises(UserError, match="train"):
        build_data(f"folder:{tmp_path}")
    write_images(tmp_path / "train" / "cat", 1, (8, 8))
    write_images(tmp_path / "train" / "dog", 1, (8, 8))
    write_images(tmp_path / "test" / "bird", 1, (8, 8))
    with pytest.raises(UserError, match="bird"):
        build_data(f"folder:{tmp_path}")


def test_missing_dataset_names_the_path_and_download(tmp_path):
    with pytest.raises(UserError) as err:
        build_data("cifar10", root=str(tmp_path))
    message = str(err.value)
    assert os.path.join(str(tmp_path), "cifar-10-batches-py") in message and "--download" in message
    with pytest.raises(UserError, match="choose from"):
        build_data("imagenet21k")


def test_cifar_and_svhn_readers(fake_root):
    cifar = build_data("cifar10", root=make_cifar(fake_root, n_train=40, n_test=20))
    assert cifar.train.images.shape == (40, 3, 32, 32) and len(cifar.test) == 20
    assert cifar.train.targets[:10].tolist() == list(range(10))
    cifar100 = build_data("cifar100", root=make_cifar(fake_root, 30, 10, classes=100, hundred=True))
    assert cifar100.train.images.shape == (30, 3, 32, 32)
    svhn = build_data("svhn", root=make_svhn(fake_root, 20, 10))
    assert svhn.train.images.shape == (20, 3, 32, 32)
    assert svhn.train.targets[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 -> digit 0


def test_mnist_reads_torchvision_raw_files(fake_root):
    mnist = build_data("mnist", root=make_mnist(fake_root, 30, 10))
    assert mnist.train.images.shape == (30, 1, 28, 28) and mnist.in_channels == 1
    assert mnist.test.targets.tolist() == list(range(10))


def test_caltech_drops_background_and_splits_90_10_per_class(fake_root):
    data = build_data("caltech101", root=make_caltech(fake_root, classes=3, per_class=10))
    assert data.num_classes == 3 and (len(data.train), len(data.test)) == (27, 3)
    assert sorted(np.bincount(data.test.targets.numpy()).tolist()) == [1, 1, 1]
    images, _, _ = data.test.__getitems__([0])
    assert images.shape == (1, 3, 224, 224)
    again = build_data("caltech101", root=fake_root)
    assert again.test.paths == data.test.paths  # the split is seeded


def test_tinyimagenet_reads_val_annotations(fake_root):
    folder = os.path.join(fake_root, "tiny-imagenet-200")
    for wnid in ("n01", "n02"):
        write_images(os.path.join(folder, "train", wnid, "images"), 2, (64, 64), ext="JPEG")
    write_images(os.path.join(folder, "val", "images"), 2, (64, 64), ext="JPEG")
    with open(os.path.join(folder, "val", "val_annotations.txt"), "w") as fh:
        fh.write("img0.JPEG\tn02\t0\t0\t1\t1\nimg1.JPEG\tn01\t0\t0\t1\t1\n")
    data = build_data("tinyimagenet", root=fake_root)
    assert len(data.train) == 4 and data.test.targets.tolist() == [1, 0]
    assert data.train.__getitems__([0])[0].shape == (1, 3, 64, 64)


def test_batch_transform_normalises_crops_and_flips():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    plain = BatchTransform((0.5,), (0.25,))
    assert torch.allclose(plain(images), (images.float() / 255 - 0.5) / 0.25)
    torch.manual_seed(0)
    flipped = BatchTransform((0.0,), (1 / 255,), flip=True)(images.repeat(20, 1, 1, 1)).round()
    rows_equal = [torch.equal(f, images[i % 2].float()) or torch.equal(f, images[i % 2].float().flip(-1))
                  for i, f in enumerate(flipped)]
    assert all(rows_equal)
    cropped = BatchTransform((0.0,), (1 / 255,), crop_padding=1)(images.repeat(50, 1, 1, 1)).round()
    assert cropped.shape == (100, 1, 4, 4)
    # every crop is the image shifted by at most one pixel, with zeros shifted in
    original = images[0, 0].float()
    padded = torch.nn.functional.pad(original, (1, 1, 1, 1))
    windows = {(dy, dx): padded[dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)}
    seen = {key for c in cropped[::2, 0] for key, w in windows.items() if torch.equal(c, w)}
    assert len(seen) == 9  # all nine shifts occur in 50 draws
    reflect = BatchTransform((0.0,), (1 / 255,), crop_padding=2, pad_mode="reflect")(images.float().byte())
    assert reflect.shape == images.shape


def test_index_sampler_yields_dataset_indices_sharded_and_seeded():
    indices = np.array([7, 3, 11, 5, 9])
    assert list(IndexSampler(indices)) == [7, 3, 11, 5, 9]
    first = list(IndexSampler(indices, shuffle=True, seed=4))
    assert sorted(first) == sorted(indices) and first == list(IndexSampler(indices, shuffle=True, seed=4))
    sampler = IndexSampler(indices, shuffle=True, seed=4)
    sampler.set_epoch(1)
    assert list(sampler) != first
    shards = [list(IndexSampler(indices, rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3 and set(shards[0] + shards[1]) == set(indices.tolist())


def test_loader_yields_uint8_batches_with_indices():
    data = build_data("digits")
    loader = make_loader(data.train, [5, 2, 9], batch_size=2, dist=Dist())
    batches = list(loader)
    assert [b[2].tolist() for b in batches] == [[5, 2], [9]]
    assert batches[0][0].dtype == torch.uint8 and batches[0][1].tolist() == data.train.targets[[5, 2]].tolist()


# ----------------------------------------------------------------------------- the registry

FAKE_LAYOUTS = {  # registered name -> writes a tiny fake copy of its standard on-disk layout under a root
    "cifar10": lambda root: make_cifar(root, n_train=20, n_test=10),
    "cifar100": lambda root: make_cifar(root, n_train=20, n_test=10, classes=100, hundred=True),
    "svhn": lambda root: make_svhn(root, n_train=20, n_test=10),
    "mnist": lambda root: make_mnist(root, n_train=20, n_test=10),
    "caltech101": lambda root: make_caltech(root, classes=3, per_class=10),
    "tinyimagenet": lambda root: make_tinyimagenet(root, classes=2, per_class=3, n_val=4),
    "digits": lambda root: root,  # built in (scikit-learn): nothing on disk
}


def _check_images(data, split, size):
    dataset = getattr(data, split)
    indices = getattr(data, f"{split}_idx")
    assert np.array_equal(indices, np.arange(len(dataset))) and len(dataset.targets) == len(dataset) > 0
    targets = dataset.targets.numpy()
    assert targets.min() >= 0 and targets.max() <= data.num_classes - 1
    chosen = sorted({0, len(dataset) // 2, len(dataset) - 1})
    images, labels, returned = dataset.__getitems__(chosen)
    assert images.dtype == torch.uint8 and images.shape == (len(chosen), data.in_channels, size, size)
    assert labels.tolist() == targets[chosen].tolist() and returned.tolist() == chosen
    return images


@pytest.mark.parametrize("name", sorted(registered_datasets()))
def test_every_registered_dataset_loads_from_its_on_disk_layout(name, tmp_path):
    if name not in FAKE_LAYOUTS:
        pytest.fail(f"dataset {name!r} is registered but has no fake on-disk layout: add a function writing a tiny "
                    "copy of its standard layout to FAKE_LAYOUTS in tests/test_data.py (makers live in "
                    "tests/conftest.py)")
    root = FAKE_LAYOUTS[name](str(tmp_path / "data"))
    data = build_data(name, root=root)
    assert data.name == name and data.num_classes >= 2
    assert data.in_channels == len(data.eval_transform.mean.flatten()) == len(data.train_transform.std.flatten())
    for split in ("train", "test"):
        images = _check_images(data, split, data.image_size)
        out = data.eval_transform(images)
        assert out.is_floating_point() and out.shape == images.shape and torch.isfinite(out).all()
    if registered_datasets()[name].image_files:
        small = build_data(name, root=root, image_size=16)
        assert small.image_size == 16 and small.num_classes == data.num_classes
        for split in ("train", "test"):
            _check_images(small, split, 16)
    else:
        with pytest.raises(UserError, match="IMAGE_SIZE applies to image files"):
            build_data(name, root=root, image_size=16)


def test_image_size_refusal_names_the_registered_image_file_datasets():
    files = sorted(n for n, entry in registered_datasets().items() if entry.image_files)
    with pytest.raises(UserError) as err:
        build_data("digits", image_size=16)
    assert f"(folder:, {', '.join(files)})" in str(err.value) and "--set IMAGE_SIZE=None" in str(err.value)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test land in a copy of the registry, dropped afterwards."""
    scratch = Registry("dataset")
    scratch.update(data_module._DATASETS)
    monkeypatch.setattr(data_module, "_DATASETS", scratch)


def test_registering_a_name_twice_raises(scratch_registry):
    def loader(root, download, image_size):
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("cifar10")(loader)
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("MNIST", image_files=True)(loader)  # names ignore case
    with pytest.raises(ValueError, match="folder:"):
        register_dataset("folder:mine")
    assert registered_datasets()["cifar10"].loader is not loader


def test_a_registered_dataset_is_built_and_listed(scratch_registry, tmp_path):
    calls = []

    @register_dataset("Toy4", image_files=True)
    def load_toy(root: str, download: bool, image_size: int | None) -> RawSplits:
        calls.append((root, download, image_size))
        size = image_size or 4
        images = torch.arange(6 * size * size, dtype=torch.int64).remainder(256).to(torch.uint8).view(6, 1, size, size)
        split = TensorImages(images, [0, 1, 2, 0, 1, 2])
        return RawSplits(split, split, 1, size, (0.5,), (0.25,), 1, True)

    assert "toy4" in list_datasets() and list_datasets()[-1] == "folder:PATH"
    assert list_datasets()[:-1] == sorted(list_datasets()[:-1])
    data = build_data("TOY4", root=str(tmp_path), download=True, max_train_samples=3, image_size=8)
    assert calls == [(str(tmp_path), True, 8)]
    assert data.name == "toy4" and data.num_classes == 3 and data.in_channels == 1 and data.image_size == 8
    assert sorted(data.train_targets[data.train_idx].tolist()) == [0, 1, 2]
    assert data.train_transform.crop_padding == 1 and data.train_transform.flip
    assert data.eval_transform.crop_padding == 0 and not data.eval_transform.flip


def test_a_dataset_registered_in_a_test_is_gone_afterwards():
    assert "toy4" not in registered_datasets() and "toy4" not in list_datasets()


def test_folder_dataset_lists_recursively_and_refuses_empty_or_stray_classes(tmp_path):
    write_images(tmp_path / "train" / "cat" / "indoor", 2, (8, 8))
    write_images(tmp_path / "train" / "dog", 2, (8, 8), seed=1)
    write_images(tmp_path / "test" / "dog", 1, (8, 8))
    os.makedirs(tmp_path / "train" / ".ipynb_checkpoints")
    data = build_data(f"folder:{tmp_path}")
    assert data.num_classes == 2 and len(data.train) == 4 and data.test.targets.tolist() == [1]
    os.makedirs(tmp_path / "train" / "bird")
    with pytest.raises(UserError, match="train/bird holds no image file"):
        build_data(f"folder:{tmp_path}")
    os.rmdir(tmp_path / "train" / "bird")
    shutil.rmtree(tmp_path / "train" / "dog")
    with pytest.raises(UserError, match="test/dog is not a class of"):
        build_data(f"folder:{tmp_path}")
    shutil.rmtree(tmp_path / "test" / "dog")
    write_images(tmp_path / "test" / "cat", 1, (8, 8))
    with pytest.raises(UserError, match="one class folder"):
        build_data(f"folder:{tmp_path}")
