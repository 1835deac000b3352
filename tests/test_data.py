"""The dataset registry, splits, transforms and index samplers."""

import builtins
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import (
    make_caltech,
    make_cifar,
    make_fashionmnist,
    make_gtsrb,
    make_mnist,
    make_svhn,
    make_tinyimagenet,
    make_torchvision_gtsrb,
    run_main,
    run_script,
    write_images,
)

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
from utils.core.data import datasets as data_module
from utils.core.distributed import Dist
from utils.core.errors import UserError
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


def test_caltech_and_tinyimagenet_skip_hidden_files_and_folders(fake_root):
    make_caltech(fake_root, classes=2, per_class=10)
    make_tinyimagenet(fake_root, classes=2, per_class=3, n_val=4)
    caltech, tiny = os.path.join(fake_root, "101_ObjectCategories"), os.path.join(fake_root, "tiny-imagenet-200")
    for folder in (os.path.join(caltech, ".ipynb_checkpoints"), os.path.join(tiny, "train", ".thumbnails")):
        write_images(folder, 2, (40, 30), ext="jpg")
    for folder in (os.path.join(caltech, "class_0"), os.path.join(tiny, "train", "n00000000", "images")):
        with open(os.path.join(folder, "._img0.jpg"), "wb") as fh:  # an AppleDouble file: not an image
            fh.write(b"\x00\x05\x16\x07")
    data = build_data("caltech101", root=fake_root)
    assert data.num_classes == 2 and len(data.train) + len(data.test) == 20
    data = build_data("tinyimagenet", root=fake_root)
    assert data.num_classes == 2 and len(data.train) == 6


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


# ----------------------------------------------------------------------------- hostile or odd files

class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's cPickle wrote its str (SHORT_BINSTRING/BINSTRING), as in
    the CIFAR files of the download."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        size = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([size]) + obj if size < 256 else
                   pickle.BINSTRING + size.to_bytes(4, "little") + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch[bytes], dispatch[str] = save_bytes, save_str


def _rewrite_batches(folder, dump):
    """Load every batch of ``folder`` with the full unpickler, add the download's other keys and
    write it back with ``dump(obj, fh)``."""
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        batch.update({b"batch_label": b"", b"filenames": [f"img{i}.png".encode() for i in range(len(batch[b"data"]))]})
        with open(os.path.join(folder, name), "wb") as fh:
            dump(batch, fh)


@pytest.mark.parametrize("writer", ["protocol2", "protocol3", "protocol4", "protocol5", "numpy1-protocol2",
                                    "numpy1-protocol5", "python2"])
def test_cifar_batches_load_as_every_pickle_of_them_is_written(writer, fake_root, monkeypatch):
    """The restricted unpickler takes what genuine batches hold: numpy arrays pickled by numpy 2
    (numpy._core) or 1.x (numpy.core) at protocols 2-5, and Python 2 pickles (the download)."""
    make_cifar(fake_root, n_train=20, n_test=10)
    make_cifar(fake_root, n_train=20, n_test=10, classes=100, hundred=True)
    if writer.startswith("numpy1"):  # numpy 1.x names its reconstructors numpy.core.*
        real = pickle.whichmodule
        monkeypatch.setattr(pickle, "whichmodule", lambda obj, name: real(obj, name).replace("numpy._core.",
                                                                                             "numpy.core."))
    protocol = int(writer[-1]) if writer != "python2" else 2
    pickler = _Py2Pickler if writer == "python2" else pickle._Pickler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 on writing numpy.core.numeric
        for folder in ("cifar-10-batches-py", "cifar-100-python"):
            _rewrite_batches(os.path.join(fake_root, folder), lambda obj, fh: pickler(fh, protocol).dump(obj))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cifar = build_data("cifar10", root=fake_root)
        cifar100 = build_data("cifar100", root=fake_root)
    assert not caught, [str(w.message) for w in caught]  # (numpy 2 warns on loading numpy.core.numeric)
    assert cifar.train.images.shape == (20, 3, 32, 32) and cifar.train.targets[:10].tolist() == list(range(10))
    assert cifar100.train.images.shape == (20, 3, 32, 32) and len(cifar100.test) == 10
    expected = make_cifar(str(fake_root) + "-plain", n_train=20, n_test=10)
    assert torch.equal(cifar.train.images, build_data("cifar10", root=expected).train.images)


@pytest.mark.parametrize("batch,message", [
    ({b"data": np.zeros((4, 3071), np.uint8), b"labels": [0] * 4}, "b'data' is a uint8 array of shape (4, 3071)"),
    ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "b'data' is a float32 array"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}, "b'labels' is not 4 labels 0..9"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, "b'labels' is not 4 labels 0..9"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": ["a"] * 4}, "b'labels' is not 4 labels"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, "b'labels' is not 4 labels"),
    ({b"labels": [0]}, "b'data' is missing"),
    ([1, 2, 3], "it holds a list, not a dict"),
])
def test_a_batch_not_shaped_as_cifar_data_is_one_line(batch, message, fake_root):
    make_cifar(fake_root, n_train=20, n_test=10)
    with open(os.path.join(fake_root, "cifar-10-batches-py", "data_batch_3"), "wb") as fh:
        pickle.dump(batch, fh)
    with pytest.raises(UserError) as err:
        build_data("cifar10", root=fake_root)
    text = str(err.value)
    assert "data_batch_3 is not CIFAR data: " in text and message in text and "pass --download" in text, text
    assert "\n" not in text


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _touch(marker):
    return f"open({str(marker)!r}, 'w').close()"


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("payload,refused", [
    (lambda marker: _System(f"touch {marker}"), "posix.system"),
    (lambda marker: {b"data": _Exec(_touch(marker)), b"labels": [0]}, "builtins.exec"),
    (lambda marker: {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"extra": _Exec(_touch(marker))},
     "builtins.exec"),
], ids=["os.system", "exec-as-data", "exec-beside-data"])
def test_a_crafted_cifar_batch_runs_no_code(payload, refused, protocol, fake_root, tmp_path):
    make_cifar(fake_root, n_train=20, n_test=10, classes=100, hundred=True)
    marker, folder = tmp_path / "MARKER", os.path.join(fake_root, "cifar-100-python")
    with open(os.path.join(folder, "train"), "wb") as fh:
        pickle.dump(payload(marker), fh, protocol=protocol)
    with pytest.raises(UserError) as err:
        build_data("cifar100", root=fake_root)
    assert not marker.exists()
    if protocol < 3:
        refused = refused.replace("builtins.", "__builtin__.")  # Python 2's name, which pickle writes then
    assert str(err.value) == (f"{os.path.join(folder, 'train')} holds a {refused} object, not CIFAR data; "
                              f"delete {folder} and pass --download")


def test_a_crafted_cifar_batch_stops_a_script_with_one_line(fake_root, tmp_path):
    make_cifar(fake_root)
    marker, out = tmp_path / "MARKER", tmp_path / "run"
    with open(os.path.join(fake_root, "cifar-10-batches-py", "data_batch_1"), "wb") as fh:
        pickle.dump(_System(f"touch {marker}"), fh)
    done = run_script("main_TOD.py", "--config", "cifar10", "--data-root", fake_root, "--trials", "1", "--cycles", "1",
                      "--epochs", "1", "--out", str(out), "--quiet")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "data_batch_1 holds a posix.system object, not CIFAR data" in done.stderr and "--download" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists() and not out.exists()


def write_blank_png(path, width, height):
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels, written without decoding it (about
    21 kB for 13000 x 13000)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row, packer = bytes(1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                 + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_an_image_over_the_decompression_bomb_limit_is_refused_quietly(tmp_path):
    """13000 x 13000 is between PIL's limit and twice it (PIL only warns): refused, no warning."""
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS < 13000 * 13000 < 2 * Image.MAX_IMAGE_PIXELS  # PIL's default limit
    for part in ("train", "test"):
        write_images(tmp_path / part / "cat", 2, (8, 8))
        write_images(tmp_path / part / "dog", 2, (8, 8), seed=1)
    write_blank_png(str(tmp_path / "train" / "dog" / "huge.png"), 13000, 13000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UserError) as err:
            build_data(f"folder:{tmp_path}", threads=2)
    assert str(err.value) == (f"image {tmp_path / 'train' / 'dog' / 'huge.png'} is 13000x13000 pixels, over PIL's "
                              f"decompression-bomb limit ({Image.MAX_IMAGE_PIXELS:,} pixels); shrink it or remove it")
    assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("side,how", [(40, "warned"), (50, "raised")])
def test_every_decode_path_refuses_a_decompression_bomb(tmp_path, monkeypatch, side, how):
    """Over the limit (PIL warns) and over twice it (PIL raises): the same line, from decode (cached
    or only checked) and from a batch read."""
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1600: warned; 50x50 = 2500: raised
    write_images(tmp_path / "small", 2, (8, 8))
    write_images(tmp_path / "big", 1, (side, side))
    paths, bomb = [str(tmp_path / "small" / "img0.png"), str(tmp_path / "small" / "img1.png"),
                   str(tmp_path / "big" / "img0.png")], str(tmp_path / "big" / "img0.png")
    shown = f"{side}x{side}" if how == "warned" else side * side  # PIL's error gives the pixel count only
    message = (f"image {bomb} is {shown} pixels, over PIL's decompression-bomb limit (1,000 pixels); "
               "shrink it or remove it")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cache_bytes in (10**6, 0):  # the images fit in memory (decoded) or not (each one checked)
            with pytest.raises(UserError) as err:
                data_module.FileImages(paths, [0, 0, 1], resize=8, cache_bytes=cache_bytes).decode([0, 1, 2])
            assert str(err.value) == message
            with pytest.raises(UserError) as err:
                data_module.FileImages(paths, [0, 0, 1], resize=8, cache_bytes=cache_bytes).__getitems__([2, 0])
            assert str(err.value) == message
    assert not caught, [str(w.message) for w in caught]
    assert data_module.FileImages(paths[:2], [0, 0], resize=8).decode([0, 1])  # the small ones still decode


def test_folder_dataset_skips_hidden_entries_and_names_a_file_that_is_no_image(tmp_path):
    for part in ("train", "test"):
        write_images(tmp_path / part / "cat", 2, (8, 8))
        write_images(tmp_path / part / "dog", 2, (8, 8), seed=1)
    hidden = [tmp_path / "train" / "cat" / "._img0.png",  # macOS AppleDouble: not a PNG
              tmp_path / "train" / "cat" / ".DS_Store", tmp_path / "test" / "dog" / "._img1.jpg"]
    for path in hidden:
        path.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    write_images(tmp_path / "train" / "cat" / ".ipynb_checkpoints", 1, (8, 8))  # real images, not of the data
    write_images(tmp_path / "train" / "dog" / "more" / ".thumbnails", 2, (8, 8))
    write_images(tmp_path / "train" / ".trash", 1, (8, 8))  # never a class
    data = build_data(f"folder:{tmp_path}")
    assert data.num_classes == 2 and len(data.train) == 4 and len(data.test) == 4 and data.decoded
    assert not [p for p in data.train.paths + data.test.paths if "/." in p]
    (tmp_path / "test" / "dog" / "notes.png").write_text("not an image\n")
    with pytest.raises(UserError) as err:
        build_data(f"folder:{tmp_path}")
    assert str(err.value).startswith(f"cannot read image {tmp_path / 'test' / 'dog' / 'notes.png'}: ")
    assert str(err.value).endswith("; fix or remove the file") and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- fashionmnist and gtsrb (the toolkit's)


FAKE_LAYOUTS.update({
    "fashionmnist": lambda root: make_fashionmnist(root, n_train=20, n_test=10),
    "gtsrb": lambda root: make_gtsrb(root, classes=43, per_class=2, n_test=1),
})


def test_fashionmnist_reads_torchvision_raw_files_with_its_own_statistics(fake_root):
    data = build_data("fashionmnist", root=make_fashionmnist(fake_root, 30, 10))
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 28)
    assert data.train.images.shape == (30, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.train.targets.tolist() == [i % 10 for i in range(30)] and data.test.targets.tolist() == list(range(10))
    assert data.train.images[:, 0, 5, 7].tolist() == [(10 * i + 1) % 256 for i in range(30)]  # image i, in order
    out = data.eval_transform(data.test.images[[3]])
    assert torch.allclose(out, torch.full((1, 1, 28, 28), (31 / 255 - 0.2860) / 0.3530))
    assert data.train_transform.flip and data.train_transform.crop_padding == 0  # the toolkit's augmentation
    assert not data.eval_transform.flip and data.eval_transform.crop_padding == 0


def test_gtsrb_reads_the_toolkits_class_folders_resized_to_32(fake_root):
    data = build_data("gtsrb", root=make_gtsrb(fake_root, classes=43, per_class=3, n_test=1))
    assert (data.num_classes, data.in_channels, data.image_size) == (43, 3, 32) and data.decoded
    assert (len(data.train), len(data.test)) == (129, 43)
    assert np.bincount(data.train_targets).tolist() == [3] * 43 and data.test.targets.tolist() == list(range(43))
    for split in (data.train, data.test):
        images, labels, _ = split.__getitems__(list(range(len(split))))
        assert images.shape == (len(split), 3, 32, 32)  # every file (20..49 pixels, not square) resized
        colours = torch.stack([labels, 2 * labels, 3 * labels], 1) % 256  # class c is painted (c, 2c, 3c)
        assert torch.equal(images[:, :, 16, 16].long(), colours)
    mean, std = data.eval_transform.mean.flatten().tolist(), data.eval_transform.std.flatten().tolist()
    assert mean == pytest.approx([0.3337, 0.3064, 0.3171]) and std == pytest.approx([0.2672, 0.2564, 0.2629])
    assert data.train_transform.crop_padding == 4 and data.train_transform.flip  # the toolkit's, HFlip included
    small = build_data("gtsrb", root=fake_root, image_size=16)
    assert small.image_size == 16 and small.train_transform.crop_padding == 2
    assert small.train.__getitems__([0])[0].shape == (1, 3, 16, 16)


def test_gtsrb_test_classes_are_those_of_train(fake_root):
    make_gtsrb(fake_root, classes=3, per_class=1, n_test=1)
    shutil.rmtree(os.path.join(fake_root, "gtsrb", "test", "00000"))  # test holds classes 1 and 2 only
    data = build_data("gtsrb", root=fake_root)
    assert data.num_classes == 3 and data.test.targets.tolist() == [1, 2]
    write_images(os.path.join(fake_root, "gtsrb", "test", "00007"), 1, (30, 30), ext="ppm")
    with pytest.raises(UserError, match="00007 is not a class of"):
        build_data("gtsrb", root=fake_root)


@pytest.mark.parametrize("name,make,remove,expected", [
    ("fashionmnist", None, None, "FashionMNIST/raw/train-images-idx3-ubyte"),
    ("fashionmnist", make_fashionmnist, "FashionMNIST/raw/t10k-labels-idx1-ubyte",
     "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
    ("gtsrb", None, None, "gtsrb/train/<class>/"),
    ("gtsrb", make_gtsrb, "gtsrb/test", "gtsrb/test/<class>/"),
])
def test_a_missing_fashionmnist_or_gtsrb_is_one_line_naming_download(name, make, remove, expected, fake_root):
    os.makedirs(fake_root, exist_ok=True)
    if make:
        make(fake_root)
        path = os.path.join(fake_root, remove)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    with pytest.raises(UserError) as err:
        build_data(name, root=fake_root)
    assert str(err.value) == (f"{name} not found: expected {os.path.join(fake_root, expected)}; pass --download to "
                              "fetch it (needs a network), or --data-root DIR to point at it")


def test_a_missing_gtsrb_stops_main_al_with_one_line(tmp_path, capsys):
    code, _, err = run_main("main_al.py --protocol deepal", ["--protocol", "deepal", "--dataset", "gtsrb", "--strategy",
                                                              "RandomSampling", "--data-root", str(tmp_path / "none"),
                                                              "--out", str(tmp_path / "run"), "--quiet"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "gtsrb not found" in err and "--download" in err, err
    assert not (tmp_path / "run").exists()


def test_gtsrb_download_lays_out_torchvisions_files_as_the_toolkit(fake_root):
    """--download: torchvision's GTSRB (here already under gtsrb/GTSRB/, so nothing is fetched) is
    linked into gtsrb/{train,test}/<class>/, the test classes from GT-final_test.csv."""
    make_torchvision_gtsrb(fake_root, classes=3, per_class=2, n_test=4)
    with pytest.raises(UserError, match="--download"):
        build_data("gtsrb", root=fake_root)
    data = build_data("gtsrb", root=fake_root, download=True)
    base = os.path.join(fake_root, "gtsrb")
    assert sorted(os.listdir(base)) == ["GT-final_test.csv", "GTSRB", "test", "train"]  # no partial folder left
    assert sorted(os.listdir(os.path.join(base, "test"))) == ["00000", "00001", "00002"]
    assert data.num_classes == 3 and np.bincount(data.train_targets).tolist() == [2, 2, 2]
    assert sorted(data.test.targets.tolist()) == [0, 0, 1, 2]
    linked = os.path.join(base, "test", "00001", "00001.ppm")
    assert os.path.samefile(linked, os.path.join(base, "GTSRB", "Final_Test", "Images", "00001.ppm"))
    images, labels, _ = data.test.__getitems__([0, 1, 2, 3])
    assert torch.equal(images[:, 1, 0, 0].long(), 2 * labels)  # class c is painted (c, 2c, 3c)
    again = build_data("gtsrb", root=fake_root)  # read as laid out, without --download
    assert again.test.paths == data.test.paths


def test_the_toolkit_profiles_of_fashionmnist_and_gtsrb():
    from config import tree
    from utils.core.config import resolve

    deepal = tree("main_al.py --protocol deepal")
    fashion = resolve(deepal, {"--dataset": "fashionmnist"}, [])
    assert (fashion["BATCH_SIZE"], fashion["MEAN"], fashion["STD"]) == (256, [0.1307], [0.3081])  # MNIST's stats
    assert (fashion["CROP_PADDING"], fashion["FLIP"], fashion["SCHEDULE"]) == (0, True, [80, 120])  # MNIST only: 20, 40
    gtsrb = resolve(deepal, {"--dataset": "gtsrb"}, [])
    assert (gtsrb["BATCH_SIZE"], gtsrb["CROP_PADDING"], gtsrb["FLIP"]) == (256, 4, True)
    assert gtsrb["MEAN"] == [0.3337, 0.3064, 0.3171] and gtsrb["STD"] == [0.2672, 0.2564, 0.2629]


def test_the_toolkit_runs_on_fashionmnist_files(tmp_path):
    import main_al
    from utils.core.results import read_config, read_cycles

    root, out = make_fashionmnist(str(tmp_path / "data"), 100, 20), str(tmp_path / "run")
    main_al.main(["--protocol", "deepal", "--dataset", "fashionmnist", "--model", "LeNet", "--data-root", root,
                  "--strategy", "RandomSampling", "--nStart", "10", "--nQuery", "10", "--nEnd", "30", "--n_epoch", "1",
                  "--quiet", "--out", out])
    assert [r["n_labeled"] for r in read_cycles(out)] == [10, 20, 30]
    settings = read_config(out)["settings"]
    assert (settings["BATCH_SIZE"], settings["MEAN"], settings["STD"], settings["FLIP"]) == (256, [0.1307], [0.3081],
                                                                                             True)
