"""Per-round overheads of the strategies with networks of their own (VAAL, WAAL, LearningLoss,
UncertainGCN, CoreGCN, ASAL): one epoch of task training with and without the strategy's hook,
and one query, on digits (LeNet) and on a CIFAR-shaped synthetic pool (slim ResNet-18); plus the
GCN query at M = 10,000 + 1,000 labeled nodes.

    python bench/learned_strategies.py [--skip-cifar]
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from utils.core.data import BatchTransform, ImageData, TensorImages, build_data, make_loader  # noqa: E402
from utils.core.distributed import Dist  # noqa: E402
from utils.samplers import QueryContext, get_strategy, train_gcn  # noqa: E402
from utils.samplers.diversity import kcenter_greedy  # noqa: E402

STRATEGIES = ["LearningLoss", "VAAL", "WAAL", "UncertainGCN", "CoreGCN", "ASAL"]


def cifar_shaped(n):
    generator = torch.Generator().manual_seed(0)
    dataset = TensorImages(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator),
                           torch.randint(0, 10, (n,), generator=generator))
    return ImageData("cifar-shaped", dataset, dataset, 10, 3, 32, BatchTransform((0.5,) * 3, (0.25,) * 3, 4, True),
                     BatchTransform((0.5,) * 3, (0.25,) * 3), np.arange(n), np.arange(n))


def epoch(model, data, labeled, pool, batch, hook_class):
    settings = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": batch, "workers": 0,
                "grad_clip": 0.1, "epoch_l": 120}
    hook = hook_class(model, data, labeled, pool, Dist(), settings) if hook_class else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(data.train, hook.train_indices(labeled) if hook else labeled, batch, True, 0)
    start = time.perf_counter()
    model.train()
    for images, targets, _ in loader:
        x = data.train_transform(images)
        out = model(x)
        loss = nn.functional.cross_entropy(out.logits, targets)
        if hook:
            loss = loss + hook.extra_loss(model, out, x, targets, 0)
            hook.zero_grad()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if hook:
            hook.step(out, 0)
    return time.perf_counter() - start, (hook.extras() if hook else {})


def bench(name, data, model_name, options, n_labeled, batch, query_size):
    rng = np.random.default_rng(0)
    labeled = np.sort(rng.choice(data.train_idx, n_labeled, replace=False))
    pool = np.setdiff1d(data.train_idx, labeled)
    base, _ = epoch(build_model(model_name, data.num_classes, data.in_channels, **options), data, labeled, pool,
                    batch, None)
    print(f"{name}: {n_labeled} labeled, {len(pool)} unlabeled; plain training epoch {base:.2f} s")
    for strategy_name in STRATEGIES:
        strategy = get_strategy(strategy_name)
        torch.manual_seed(0)
        model = build_model(model_name, data.num_classes, data.in_channels, **options)
        seconds, extras = epoch(model, data, labeled, pool, batch, strategy.training)
        ctx = QueryContext(model, data, labeled, strategy.candidates(pool), query_size, Dist(), 256,
                           extras={**extras, "asal": {"steps": 500}})
        start = time.perf_counter()
        strategy.select(ctx)
        query = time.perf_counter() - start
        extra = f"training epoch {seconds:.2f} s ({seconds / base:.1f}x plain)" if strategy.training else "no training"
        print(f"  {strategy_name:13s} {extra}; query {query:.2f} s" + (" (ASAL: 500 GAN steps)" if
                                                                         strategy_name == "ASAL" else ""))


def bench_gcn():
    torch.manual_seed(0)
    features = torch.randn(11_000, 128)
    is_labeled = torch.zeros(11_000, dtype=torch.bool)
    is_labeled[:1_000] = True
    start = time.perf_counter()
    _, (probability, hidden, out) = train_gcn(features, is_labeled)
    trained = time.perf_counter() - start
    nodes = torch.cat([hidden, out[:, None]], 1)
    kcenter_greedy(nodes[1_000:], nodes[:1_000], 1_000)
    print(f"GCN query at M = 10,000 unlabeled + 1,000 labeled, D=128: 200 epochs {trained:.1f} s, "
          f"then CoreGCN's 1,000 k-center picks {time.perf_counter() - start - trained:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-cifar", action="store_true")
    args = parser.parse_args()
    bench_gcn()
    digits = build_data("digits", resize=28)
    bench("digits (LeNet, batch 64)", digits, "lenet", {"image_size": 28}, 143, 64, 72)
    if not args.skip_cifar:
        bench("CIFAR-shaped (slim ResNet-18, batch 256)", cifar_shaped(5_000), "resnet18",
              {"width": 16, "consistency_head": False}, 500, 256, 250)


if __name__ == "__main__":
    main()
