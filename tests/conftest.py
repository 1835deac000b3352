"""Shared test helpers: tiny fake datasets in the real on-disk formats, a script runner, and a tiny
model, dataset and QueryContext for the query strategies (``TinyNet``, ``tiny_data``, ``tiny_context``).

Test modules import these from here (``from conftest import ...``), never from one another. Project
modules are imported inside the helpers: ``ROOT`` is put on ``sys.path`` below."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

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


def make_fashionmnist(root, n_train=30, n_test=10):
    """torchvision's raw FashionMNIST layout (``FashionMNIST/raw/``): the idx files of MNIST; image i
    of a split is filled with the value 10 * i + 1 (mod 256) and has label i % 10."""
    folder = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(folder, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.repeat(((10 * np.arange(n) + 1) % 256).astype(np.uint8), 28 * 28)
        with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as fh:
            fh.write(np.array([2051, n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as fh:
            fh.write(np.array([2049, n], dtype=">i4").tobytes() + (np.arange(n) % 10).astype(np.uint8).tobytes())
    return root


def make_gtsrb(root, classes=43, per_class=2, n_test=1):
    """The toolkit's GTSRB layout, ``gtsrb/{train,test}/<class, 00000..>/``: PPM images of varying
    sizes (as GTSRB's), ``per_class`` training and ``n_test`` test images per class; every pixel of
    class c is (c, 2c, 3c) mod 256."""
    from PIL import Image

    for part, n in (("train", per_class), ("test", n_test)):
        for c in range(classes):
            folder = os.path.join(root, "gtsrb", part, f"{c:05d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                side = 20 + (3 * c + i) % 30  # 20..49 pixels
                colour = tuple(k * c % 256 for k in (1, 2, 3))
                Image.new("RGB", (side, side + i), colour).save(os.path.join(folder, f"{c:05d}_{i:05d}.ppm"))
    return root


def make_torchvision_gtsrb(root, classes=3, per_class=2, n_test=4):
    """What torchvision's GTSRB download leaves under ``root/gtsrb``: ``GTSRB/Training/<class>/*.ppm``
    (with each class's GT csv), ``GTSRB/Final_Test/Images/*.ppm`` and ``GT-final_test.csv``
    (test image i is of class i % classes); pixels of class c are (c, 2c, 3c) as make_gtsrb's."""
    from PIL import Image

    base = os.path.join(root, "gtsrb")
    for c in range(classes):
        folder = os.path.join(base, "GTSRB", "Training", f"{c:05d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (30, 30), (c, 2 * c, 3 * c)).save(os.path.join(folder, f"00000_{i:05d}.ppm"))
        with open(os.path.join(folder, f"GT-{c:05d}.csv"), "w") as fh:
            fh.write("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    test = os.path.join(base, "GTSRB", "Final_Test", "Images")
    os.makedirs(test, exist_ok=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(n_test):
        c = i % classes
        Image.new("RGB", (25, 25), (c, 2 * c, 3 * c)).save(os.path.join(test, f"{i:05d}.ppm"))
        rows.append(f"{i:05d}.ppm;25;25;1;1;24;24;{c}")
    with open(os.path.join(base, "GT-final_test.csv"), "w") as fh:
        fh.write("\n".join(rows) + "\n")
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


def make_tinyimagenet(root, classes=2, per_class=3, n_val=4):
    """A ``tiny-imagenet-200`` folder: 64x64 JPEGs in ``train/<wnid>/images/`` (plus the boxes
    file) and ``val/images/``, labelled by ``val/val_annotations.txt`` (tab-separated, val image i
    is of class i % classes)."""
    folder = os.path.join(root, "tiny-imagenet-200")
    wnids = [f"n{c:08d}" for c in range(classes)]
    for c, wnid in enumerate(wnids):
        write_images(os.path.join(folder, "train", wnid, "images"), per_class, (64, 64), seed=c, ext="JPEG")
        with open(os.path.join(folder, "train", wnid, f"{wnid}_boxes.txt"), "w") as fh:
            fh.writelines(f"img{i}.JPEG\t0\t0\t63\t63\n" for i in range(per_class))
    write_images(os.path.join(folder, "val", "images"), n_val, (64, 64), seed=classes, ext="JPEG")
    with open(os.path.join(folder, "val", "val_annotations.txt"), "w") as fh:
        fh.writelines(f"img{i}.JPEG\t{wnids[i % classes]}\t0\t0\t63\t63\n" for i in range(n_val))
    return root


def make_imagenet_weights(path):
    """A file shaped like torchvision's resnet18-5c106cde.pth (random weights)."""
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), path)
    return path


class TinyNet(nn.Module):
    """16 inputs -> 8 features (ReLU) -> dropout -> 3 logits, with BatchNorm to check its mode;
    split at the dropout for MC inference."""

    def __init__(self, seed=0):
        from models import ConsistentDropout

        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.drop = ConsistentDropout(0.3)
        self.fc = nn.Linear(8, 3)
        self.trunk_calls = 0

    def mc_trunk(self, x):
        self.trunk_calls += 1
        return self.body(x)

    def mc_head(self, h):
        from models import ModelOutput

        return ModelOutput(self.fc(self.drop(h)), h, None, [h[:, :, None, None]])

    def forward(self, x):
        return self.mc_head(self.body(x))


def tiny_data(n=60, seed=0):
    """``n`` random 1x4x4 images in 3 classes; train set = test set."""
    from utils.core.data import BatchTransform, ImageData, TensorImages

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=generator)
    dataset = TensorImages(images, torch.arange(n) % 3)
    transform = BatchTransform((0.5,), (0.25,))
    return ImageData("tiny", dataset, dataset, 3, 1, 4, transform, transform, np.arange(n), np.arange(n))


def ccal_extras(data, labeled, query_size, seed):
    """CCAL's query extras for ``data``: random encoder features (4 rotations), one row per index,
    the labeled images' classes, and query_size // classes picks per class."""
    generator = torch.Generator().manual_seed(seed)
    n = len(data.train)
    return {"features": (torch.randn(n, 4, 8, generator=generator), torch.randn(n, 8, generator=generator)),
            "positions": np.arange(n), "labels": data.train.targets[labeled], "k": 100.0, "t": 0.9,
            "target": max(1, query_size // data.num_classes)}


def tiny_context(candidates, query_size, seed=0, data=None):
    """A QueryContext over ``tiny_data`` (the samples not in ``candidates`` are labeled) with a ``TinyNet`` and
    the extras every registered strategy needs and small strategy settings (TINY_SETTINGS: ASAL 3 steps, ...)."""
    from models import LossNet
    from models.vaal import VAE, LatentDiscriminator
    from models.waal import Critic
    from utils.core.distributed import Dist
    from utils.samplers import QueryContext

    data = data or tiny_data()
    model = TinyNet().eval()
    labeled = np.setdiff1d(data.train_idx, candidates)
    extras = {"previous_model": TinyNet(seed=1).eval(), "loss_module": LossNet((8,)), "ensemble": [model, TinyNet(2)],
              "state": {}, "mc_dropout": True, "vae": VAE(1, 32, 8), "discriminator": LatentDiscriminator(8),
              "vae_size": 32, "critic": Critic(8), "unknown_class": 2, **ccal_extras(data, labeled, query_size, seed)}
    return QueryContext(model, data, labeled, np.asarray(candidates), query_size, Dist(), batch_size=16,
                        rng=np.random.default_rng(seed), extras=extras, mc_samples=5, settings=dict(TINY_SETTINGS))


TINY_SETTINGS = {"ASAL_STEPS": 3, "CONSISTENCY_VIEWS": 4, "DIFF2AUG_CLUSTERS": 3}  # strategy settings for tiny contexts


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of small tensors: as fast, and immune to a busy second
    core (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_root(tmp_path):
    return str(tmp_path / "data")


def fill_labels(csv_path, truth, override=None):
    """Fill the label column of a query CSV from ``truth`` (``override``: {row number: label})."""
    import csv

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for number, row in enumerate(rows, start=1):
        row["label"] = (override or {}).get(number, truth.get(row["path"], ""))
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _annotation(number, name, when, cancelled=False):
    """One Label Studio annotation choosing ``name`` at ``when`` (``cancelled``: skipped, no result)."""
    return {"id": number, "result": [] if cancelled else [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [name]}}],
        "was_cancelled": cancelled, "created_at": when, "updated_at": when, "lead_time": 2.5}


def label_studio_export(query, answers, fmt, path):
    """What Label Studio exports for the imported ``query`` labeled with ``answers`` (one name per
    task, or a list of (name, when, cancelled) annotations): JSON, JSON-MIN or CSV at ``path``."""
    import csv
    import json

    items = []
    for number, (task, given) in enumerate(zip(query, answers), start=1):
        given = given if isinstance(given, list) else [(given, "2026-12-08T03:00:00Z", False)]
        notes = [_annotation(100 * number + k, *note) for k, note in enumerate(given)]
        if fmt == "json":
            items.append({"id": number, "data": task["data"], "annotations": notes, "predictions": task["predictions"]})
            continue
        for note in notes:  # JSON-MIN and CSV: one row per annotation, the choice under the control's name
            row = {"id": number, **task["data"], "annotator": 1, "annotation_id": note["id"],
                   "created_at": note["created_at"], "updated_at": note["updated_at"], "lead_time": 2.5}
            if note["result"]:
                row["label"] = note["result"][0]["value"]["choices"][0]
            items.append(row)
    with open(path, "w", newline="") as fh:
        if fmt == "csv":
            columns = list(dict.fromkeys(key for row in items for key in row))
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(items)
        else:
            json.dump(items, fh)
    return str(path)


# script (settings tree) -> (entry module, the smallest argv it accepts, the folder flag it writes to)
ENTRY = {
    "main_TOD.py": ("main_TOD", ["--config", "digits"], "--out"),
    "main_LL4AL.py": ("main_LL4AL", ["--config", "digits"], "--out"),
    "main_al.py --protocol deepal": ("main_al", ["--protocol", "deepal", "--dataset", "digits", "--strategy",
                                                 "EntropySampling", "--model", "LeNet"], "--out"),
    "main_al.py --protocol rethinking": ("main_al", ["--dataset", "digits", "--al-method", "random"], "--out"),
    "contrast_main.py": ("contrast_main", ["--dataset", "digits", "--known-classes", "0,1", "--mode", "senmatic"],
                         "--logdir"),
    "active_main.py": ("active_main", ["--dataset", "digits", "--known-classes", "0,1"], "--out"),
    "AL_center.py": ("AL_center", ["--dataset", "digits", "--known-class", "5"], "--save-dir"),
    "AL_center_temperature.py": ("AL_center_temperature", ["--dataset", "digits", "--known-class", "5"],
                                 "--save-dir"),
}


def run_main(script, argv, capsys):
    """(exit code, stdout, stderr) of ``script``'s main(argv) in this process."""
    import importlib

    from utils.core.cli import run_cli

    module = importlib.import_module(ENTRY[script][0])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: module.main(argv))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err.strip()
