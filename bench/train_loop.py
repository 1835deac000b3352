"""Training-loop overhead: one epoch through the real data pipeline (DataLoader over indices,
uint8 batches, augmentation + normalisation on the device) versus raw forward/backward on the
same batches already prepared as float tensors.

    python bench/train_loop.py                 # digits with the digits config's model
    python bench/train_loop.py --cifar-shaped  # 3x32x32 synthetic images, CIFAR ResNet-18
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.tod import dataset_config  # noqa: E402
from models import build_model  # noqa: E402
from utils.core.data import BatchTransform, ImageData, TensorImages, build_data, make_loader  # noqa: E402


def cifar_shaped(n):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 10, (n,), generator=generator)
    dataset = TensorImages(images, targets)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    return ImageData("cifar-shaped", dataset, dataset, 10, 3, 32, BatchTransform(mean, std, 4, True),
                     BatchTransform(mean, std), np.arange(n), np.arange(n))


def step(model, optimizer, x, y):
    loss = nn.functional.cross_entropy(model(x).logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed_epoch(model, optimizer, batches):
    start = time.perf_counter()
    for x, y in batches():
        step(model, optimizer, x, y)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar-shaped", action="store_true")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.cifar_shaped:
        data, batch, width = cifar_shaped(args.samples or 512), 128, 64
    else:
        cfg = dataset_config("digits")
        data, batch, width = build_data("digits"), cfg["BATCH"], cfg["WIDTH"]
        if args.samples:
            data.train_idx = data.train_idx[: args.samples]
    model = build_model("resnet18", data.num_classes, data.in_channels, width=width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(data.train, data.train_idx, batch, shuffle=True, seed=0)
    prepared = [(data.train_transform(images), targets) for images, targets, _ in loader]

    def pipeline():
        for images, targets, _ in loader:
            yield data.train_transform(images), targets

    timed_epoch(model, optimizer, lambda: prepared)  # warm-up
    raw, full = [], []
    for _ in range(args.repeats):  # interleaved, best of N
        raw.append(timed_epoch(model, optimizer, lambda: prepared))
        full.append(timed_epoch(model, optimizer, pipeline))
    raw_s, full_s = min(raw), min(full)
    print(f"{data.name}: {len(data.train_idx)} images, batch {batch}, ResNet-18 width {width}, "
          f"{torch.get_num_threads()} threads")
    print(f"raw forward/backward {raw_s:.3f} s/epoch, full pipeline {full_s:.3f} s/epoch, "
          f"overhead {100 * (full_s / raw_s - 1):+.1f} %")


if __name__ == "__main__":
    main()
