"""What ``--amp bf16`` and ``--channels-last`` do on this machine's CPU to the CIFAR ResNet-18: one training step
(forward, cross-entropy, backward, SGD step) on a CIFAR-shaped batch, and a pool-scoring pass
(``utils.core.train.predict``: eval mode, the plain view's normalisation, softmax entropy of every image), in
the four combinations fp32, bf16, channels-last, bf16 + channels-last. The autocast, the channels-last
weights and inputs and the float32 outputs go through ``utils.core.precision.Precision`` (``wrap`` and
``minimize`` for training; ``predict`` reads ``Dist.precision``), as the scripts do. It reports; it does
not choose a default.

    python bench/precision.py                          # slim (width 16) and full-width (64) ResNet-18
    python bench/precision.py --widths 16 --rounds 5   # one width, more rounds

Each combination trains its own copy of the same initial network. The combinations run interleaved (round
r: one training step of each, then one scoring pass of each) and each reports its best round, after one
untimed warm-up round (oneDNN builds its kernels for each layout and dtype there).
"""

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from utils.core.data import BatchTransform, ImageData, TensorImages  # noqa: E402
from utils.core.distributed import Dist  # noqa: E402
from utils.core.precision import Precision  # noqa: E402
from utils.core.train import predict  # noqa: E402

COMBINATIONS = {"fp32": ("off", False), "bf16": ("bf16", False), "channels-last": ("off", True),
                "bf16 + channels-last": ("bf16", True)}


def cifar_shaped(n, seed=0):
    """``n`` random uint8 3x32x32 images in 10 classes, train set = test set (CIFAR's normalisation)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    dataset = TensorImages(images, torch.randint(0, 10, (n,), generator=generator))
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
    return ImageData("cifar-shaped", dataset, dataset, 10, 3, 32, BatchTransform(mean, std, 4, True),
                     BatchTransform(mean, std), np.arange(n), np.arange(n))


def entropy(out, _targets):
    p = out.logits.softmax(1)
    return -(p * p.clamp_min(1e-12).log()).sum(1)


class Setup:
    """One combination: its precision, its copy of the network (wrapped), its optimizer."""

    def __init__(self, name, base, device):
        amp, channels_last = COMBINATIONS[name]
        self.name, self.precision = name, Precision(amp, channels_last, device.type)
        self.dist = Dist(device=device, precision=self.precision)
        self.model = copy.deepcopy(base)
        self.net = self.precision.wrap(self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.step_s, self.score_s = [], []

    def step(self, x, y):
        self.net.train()
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(self.net(x).logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.minimize(loss, self.optimizer)
        self.step_s.append(time.perf_counter() - start)
        return loss.item()

    def score(self, data, pool, batch):
        start = time.perf_counter()
        scores = predict(self.model, data, pool, entropy, batch, self.dist)
        self.score_s.append(time.perf_counter() - start)
        return scores


def bench_width(width, args, device):
    torch.manual_seed(0)
    data = cifar_shaped(max(args.batch, args.pool))
    images, targets = data.train.images[: args.batch], torch.as_tensor(data.train.targets[: args.batch])
    x, y = data.train_transform(images.to(device)), targets.to(device)  # one augmented, normalised batch
    pool = np.arange(args.pool)
    base = build_model("resnet18", 10, 3, width=width).to(device)
    setups = [Setup(name, base, device) for name in COMBINATIONS]
    for r in range(args.rounds + 1):  # round 0: warm-up
        for s in setups:
            s.step(x, y)
        for s in setups:
            s.score(data, pool, args.score_batch)
        if r == 0:
            for s in setups:
                s.step_s.clear()
                s.score_s.clear()
    fp32 = setups[0]
    print(f"\nResNet-18 width {width} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f} M parameters): "
          f"training batch {args.batch}, pool of {args.pool} scored in batches of {args.score_batch}; best of "
          f"{args.rounds} rounds after 1 warm-up")
    print("| combination | train step (s) | train images/s | vs fp32 | scoring images/s | vs fp32 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for s in setups:
        step, score = min(s.step_s), min(s.score_s)
        row = {"width": width, "combination": s.name, "step_s": step, "train_ips": args.batch / step,
               "train_ratio": min(fp32.step_s) / step, "score_ips": args.pool / score,
               "score_ratio": min(fp32.score_s) / score}
        rows.append(row)
        print(f"| {s.name} | {step:.3f} | {row['train_ips']:.0f} | {row['train_ratio']:.2f}x | {row['score_ips']:.0f} "
              f"| {row['score_ratio']:.2f}x |", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="16,64", help="first-stage widths of the ResNet-18 (default 16,64)")
    parser.add_argument("--batch", type=int, default=128, help="training batch (default 128)")
    parser.add_argument("--pool", type=int, default=512, help="images scored per pass (default 512)")
    parser.add_argument("--score-batch", type=int, default=512, help="scoring batch (default 512, the toolkit's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            flags = {f for line in fh if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    bf16_flags = ", ".join(sorted(f for f in flags if "bf16" in f or f.startswith("amx"))) or "none"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; CPU bf16 flags: "
          f"{bf16_flags}; oneDNN bf16 {'supported' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'absent'}")
    for width in (int(w) for w in args.widths.split(",")):
        bench_width(width, args, device)


if __name__ == "__main__":
    main()
