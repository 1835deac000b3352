"""Speed and memory of the expensive strategies against the way the toolkit computes them.

    python bench/strategies.py            # everything (a few minutes on 2 CPU cores)
    python bench/strategies.py kcenter    # or: badge, mc, big
"""

import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from utils.core.data import BatchTransform, ImageData, TensorImages  # noqa: E402
from utils.core.distributed import Dist  # noqa: E402
from utils.core.train import predict  # noqa: E402
from utils.samplers import badge_select, kcenter_greedy  # noqa: E402
from utils.samplers.mc_dropout import mc_dropout_probs  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def toolkit_kcenter(pool, labeled, picks):
    """The toolkit's KCenterGreedy: the full N x N distance matrix, then np.delete/np.append of
    the unlabeled x labeled block at every pick (spec 003, 6.10)."""
    emb = np.concatenate([labeled, pool])
    sq = (emb ** 2).sum(1)
    dist = np.sqrt(np.clip(sq[:, None] + sq[None] - 2 * emb @ emb.T, 0, None))
    is_labeled = np.zeros(len(emb), dtype=bool)
    is_labeled[: len(labeled)] = True
    block = dist[~is_labeled][:, is_labeled]
    chosen = []
    for _ in range(picks):
        position = block.min(axis=1).argmax()
        index = np.arange(len(emb))[~is_labeled][position]
        is_labeled[index] = True
        block = np.delete(block, position, 0)
        block = np.append(block, dist[~is_labeled, index][:, None], axis=1)
        chosen.append(index - len(labeled))
    return chosen


def bench_kcenter():
    rng = np.random.default_rng(0)
    pool, labeled = rng.standard_normal((10_000, 512), dtype=np.float32), rng.standard_normal((1_000, 512),
                                                                                                dtype=np.float32)
    ours, t_ours = timed(lambda: kcenter_greedy(torch.from_numpy(pool), torch.from_numpy(labeled), 500).tolist())
    theirs, t_theirs = timed(lambda: toolkit_kcenter(pool, labeled, 500))
    print(f"k-center greedy N=10,000 L=1,000 D=512, 500 picks: ours {t_ours:.2f} s, toolkit full matrix "
          f"{t_theirs:.2f} s ({t_theirs / t_ours:.0f}x), same picks: {ours == theirs}")


def dense_badge(probs, emb, picks, generator):
    """k-means++ over the materialised gradient embeddings (N x C*D), vectorised."""
    grad = probs.clone()
    grad[torch.arange(len(grad)), probs.argmax(1)] -= 1
    g = (grad[:, :, None] * emb[:, None, :]).flatten(1)
    sq = g.pow(2).sum(1)
    pick = int(torch.argmax(sq))
    min_dist = torch.full_like(sq, float("inf"))
    chosen = [pick]
    for _ in range(picks - 1):
        min_dist = torch.minimum(min_dist, (sq + sq[pick] - 2 * torch.mv(g, g[pick])).clamp_min(0))
        min_dist[chosen] = 0
        pick = int(torch.multinomial(min_dist, 1, generator=generator))
        chosen.append(pick)
    return chosen


def bench_badge():
    torch.manual_seed(0)
    probs, emb = torch.softmax(3 * torch.randn(20_000, 10), 1), torch.randn(20_000, 512)
    ours, t_ours = timed(lambda: badge_select(probs, emb, 500, torch.Generator().manual_seed(0)))
    theirs, t_theirs = timed(lambda: dense_badge(probs, emb, 500, torch.Generator().manual_seed(0)))
    print(f"BADGE N=20,000 C=10 D=512, 500 picks: ours {t_ours:.2f} s, k-means++ over materialised gradient "
          f"embeddings {t_theirs:.2f} s ({t_theirs / t_ours:.0f}x); same first pick: {int(ours[0]) == theirs[0]}")


def bench_big():
    torch.manual_seed(0)
    pool, labeled = torch.randn(200_000, 512), torch.randn(1_000, 512)
    _, seconds = timed(lambda: kcenter_greedy(pool, labeled, 1_000))
    print(f"k-center greedy N=200,000 D=512, 1,000 picks: {seconds:.1f} s, peak RSS {peak_rss_gb():.2f} GB "
          f"(the embeddings alone: {pool.numel() * 4 / 2**30:.2f} GB)")
    bench_big_badge()


def bench_big_badge():
    probs, emb = torch.softmax(3 * torch.randn(50_000, 100), 1), torch.randn(50_000, 512)
    _, seconds = timed(lambda: badge_select(probs, emb, 1_000, torch.Generator().manual_seed(0)))
    print(f"BADGE CIFAR-100 sized (N=50,000 C=100 D=512), 1,000 picks: {seconds:.1f} s, peak RSS "
          f"{peak_rss_gb():.2f} GB (materialised g would be {50_000 * 100 * 512 * 4 / 2**30:.1f} GB)")


def bench_mc():
    torch.manual_seed(0)
    n = 1024
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    transform = BatchTransform((0.5,) * 3, (0.25,) * 3)
    data = ImageData("cifar-shaped", TensorImages(images, torch.zeros(n)), None, 10, 3, 32, transform, transform,
                     np.arange(n), np.arange(0))
    model = build_model("resnet18", 10, width=16, consistency_head=False, dropout=0.2)
    _, single = timed(lambda: predict(model, data, np.arange(n), lambda out, _y: out.logits, 256, Dist()))
    _, mc = timed(lambda: mc_dropout_probs(model, data, np.arange(n), 10, 256, Dist()))
    print(f"MC dropout, slim ResNet-18, 1,024 CIFAR-shaped images: one eval pass {single:.2f} s, 10 MC passes "
          f"{mc:.2f} s ({mc / single:.2f}x one pass: the backbone runs once, the head 10 times)")


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["kcenter", "badge", "mc", "big"]
    for name in chosen:
        {"kcenter": bench_kcenter, "badge": bench_badge, "mc": bench_mc, "big": bench_big}[name]()
