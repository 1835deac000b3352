"""CCAL's costs (spec 002 A.4, A.6).

step:  one contrastive step through the real pipeline (index DataLoader, uint8 batch, flips,
       rotations and simclr_aug on the device, forward, NT-Xent + shift CE, backward, SGD and LR
       step) against the same step on the same rows already augmented (raw forward/backward).
score: the joint query on random features of CIFAR-10 m=0.8 sizes (46,001 pool images, 800 to
       9,000 labeled), time and peak memory.

    python bench/ccal_step.py               # both (a few minutes on 2 CPU cores)
    python bench/ccal_step.py step --batch 32 --width 64
    python bench/ccal_step.py score
"""

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config.ccal import contrast_tree  # noqa: E402
from models import build_model  # noqa: E402
from utils.core.config import resolve  # noqa: E402
from utils.core.data import TensorImages, make_loader  # noqa: E402
from utils.methods.contrastive import contrastive_losses, training_views, warmup_schedule  # noqa: E402
from utils.protocols.ccal import make_augment  # noqa: E402
from utils.samplers.ccal import ccal_query  # noqa: E402

CFG = resolve(contrast_tree(), {}, [])  # contrast_main.py's defaults (augmentation, RESIZE_FACTOR)


def bench_step(args):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = args.batch * args.steps
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    loader = make_loader(TensorImages(images, torch.zeros(n, dtype=torch.long)), np.arange(n), args.batch, True, 0)
    for mode, k_shift in (("senmatic", 1), ("feature", 4)):
        bench_mode(mode, k_shift, loader, device, args)


def bench_mode(mode, k_shift, loader, device, args):
    augment = make_augment(CFG, CFG.RESIZE_FACTOR, False)
    torch.manual_seed(0)
    model = build_model("csi_resnet18", None, 3, width=args.width, simclr_dim=128, k_shift=k_shift).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9, weight_decay=1e-6)
    scheduler = warmup_schedule(optimizer, 100, args.steps, 10, 10)
    generator = torch.Generator(device).manual_seed(0)

    def views(batch):
        return training_views(batch.to(device).float().div_(255), augment, generator, k_shift)

    def step(rows, labels):
        loss_sim, loss_shift = contrastive_losses(model(rows), labels, 0.5, 1.0)
        optimizer.zero_grad(set_to_none=True)
        (loss_sim + loss_shift).backward()
        optimizer.step()
        scheduler.step()

    prepared = [views(batch) for batch, _t, _i in loader]

    def raw():
        for rows, labels in prepared:
            step(rows, labels)

    def full():
        for batch, _targets, _idx in loader:
            step(*views(batch))

    def views_only():
        for batch, _targets, _idx in loader:
            views(batch)

    timed(raw)  # warm-up
    raw_s, full_s, views_s = [], [], []
    for _ in range(args.repeats):  # interleaved, best of N
        raw_s.append(timed(raw))
        full_s.append(timed(full))
        views_s.append(timed(views_only))
    raw_t, full_t, views_t = min(raw_s), min(full_s), min(views_s)
    print(f"{mode}: batch {args.batch} -> {len(prepared[0][0])} rows of 3x32x32, ResNet-18 width {args.width}, "
          f"{device}, {torch.get_num_threads()} threads: raw {raw_t / args.steps:.3f} s/step, full "
          f"{full_t / args.steps:.3f} s/step, overhead {100 * (full_t / raw_t - 1):+.1f} % "
          f"(views alone {100 * views_t / raw_t:.1f} % of raw)", flush=True)


def bench_score(args):
    rng = torch.Generator().manual_seed(0)
    n_pool, dim = 46_001, 128
    for n_labeled in (800, 9_000):
        feature_idx = np.arange(n_pool + n_labeled)
        features = (torch.randn(len(feature_idx), 4, dim, generator=rng), torch.randn(len(feature_idx), dim,
                                                                                        generator=rng))
        labeled, pool = feature_idx[:n_labeled], feature_idx[n_labeled:]
        labels = np.arange(n_labeled) % 2
        before = peak_rss_gb()
        start = time.perf_counter()
        queried, _ = ccal_query(features, feature_idx, pool, labeled, labels, 2, 100.0, 0.9, 750)
        print(f"score: pool {n_pool}, labeled {n_labeled}, 2 known classes, 1,500 picks: "
              f"{time.perf_counter() - start:.2f} s, peak RSS {peak_rss_gb():.2f} GB (features alone "
              f"{sum(f.numel() for f in features) * 4 / 2**30:.2f} GB; before {before:.2f} GB), "
              f"{len(queried)} queried", flush=True)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=["step", "score", "all"], default="all")
    parser.add_argument("--batch", type=int, default=8, help="images per step (the README: 32 per GPU)")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.what in ("step", "all"):
        bench_step(args)
    if args.what in ("score", "all"):
        bench_score(args)


if __name__ == "__main__":
    main()
