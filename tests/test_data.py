"""The dataset registry, splits, transforms and index samplers."""

import os

import numpy as np
import pytest
import torch
from conftest import make_caltech, make_cifar, make_mnist, make_svhn, write_images

from utils.core.cli import UserError
from utils.core.data import BatchTransform, IndexSampler, build_data, make_loader
from utils.core.distributed import Dist
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
