"""Speed of LfOSA's query (AV_temperature) over a 50,000-image pool, the target being 30 s on 2 CPU cores.

    python bench/lfosa_query.py            # everything (a few minutes on 2 CPU cores)
    python bench/lfosa_query.py gmm        # or: query, forward

* gmm: the selection alone (per-class GMMs on the max activations + top-k) on 50,000 synthetic
  detector outputs, K = 20 known classes + the unknown class, bimodal max activations.
* query: the whole query as AL_center_temperature.py runs it (plain-view scoring of 50,000
  CIFAR-shaped uint8 images through the DataLoader, GMMs, top 1,500) with a small
  2-d-bottleneck ResNet-18 (first stage 8 channels).
* forward: eval-mode throughput of the paper's ResNet-18 (first stage 64 channels) on CIFAR-shaped
  batches of 128, extrapolated to 50,000 images: the scoring part of a real CIFAR query on this CPU.
"""

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from config import lfosa as defaults  # noqa: E402
from models import build_model  # noqa: E402
from utils.core.data import BatchTransform, ImageData, TensorImages  # noqa: E402
from utils.core.distributed import Dist  # noqa: E402
from utils.samplers import QueryContext, av_scores, get_strategy, top_k  # noqa: E402

POOL, KNOWN, QUERY = 50_000, 20, 1_500


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def synthetic_logits(n, known, seed=0):
    """Detector-like outputs: a random predicted class (a sixth predicted unknown); the max
    activation is high (mean 8) for 30 % of the samples and low (mean 3) for the rest."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, known + 1)).astype(np.float32)
    predicted = np.where(rng.random(n) < 1 / 6, known, rng.integers(0, known, n))
    logits[np.arange(n), predicted] = np.where(rng.random(n) < 0.3, rng.normal(8, 1, n), rng.normal(3, 1, n))
    return torch.from_numpy(logits)


def bench_gmm():
    logits = synthetic_logits(POOL, KNOWN)
    positions, seconds = timed(lambda: top_k(av_scores(logits, seed=0, unknown_class=KNOWN), QUERY))
    high = (logits.max(1).values[positions] > 5.5).float().mean()
    print(f"GMMs + top-k, N={POOL:,}, K={KNOWN}+1: {seconds:.2f} s ({100 * high:.0f} % of the picks from the "
          "high mode)")


def cifar_pool(n):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    mean, std = defaults.NORMALISATION["cifar100"]
    return ImageData("fake-cifar", TensorImages(images, torch.zeros(n, dtype=torch.long)), None, KNOWN, 3, 32,
                     BatchTransform(mean, std, 4, True), BatchTransform(mean, std), np.arange(n), None)


def bench_query(width=8):
    torch.manual_seed(0)
    data = cifar_pool(POOL)
    model = build_model("lfosa_resnet18", KNOWN + 1, 3, width=width).eval()
    ctx = QueryContext(model, data, np.empty(0, np.int64), data.train_idx, QUERY, Dist(), 128,
                       extras={"unknown_class": KNOWN}, rng=np.random.default_rng(0))
    chosen, seconds = timed(lambda: get_strategy("AV_temperature").select(ctx))
    print(f"AV_temperature query, N={POOL:,} CIFAR-shaped images, ResNet-18 width {width}, top {len(chosen):,}: "
          f"{seconds:.1f} s")


def bench_forward(width=64, batches=5):
    torch.manual_seed(0)
    model = build_model("lfosa_resnet18", KNOWN + 1, 3, width=width).eval()
    x = torch.randn(128, 3, 32, 32)
    with torch.no_grad():
        model(x)  # warm-up
        _, seconds = timed(lambda: [model(x) for _ in range(batches)])
    per_image = seconds / (batches * len(x))
    print(f"ResNet-18 width {width} eval forward: {1 / per_image:.0f} images/s, {POOL:,} images in "
          f"{per_image * POOL:.0f} s (extrapolated from {batches} batches of 128)")


BENCHES = {"gmm": bench_gmm, "query": bench_query, "forward": bench_forward}

if __name__ == "__main__":
    print(f"torch threads: {torch.get_num_threads()}")
    for name in sys.argv[1:] or BENCHES:
        BENCHES[name]()
