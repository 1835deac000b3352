"""Speed and memory of the expensive strategies against the way the toolkit computes them.

    python bench/strategies.py            # everything (a few minutes on 2 CPU cores)
    python bench/strategies.py kcenter    # or: badge, mc, big, and the 2021-2023 baselines at N=50,000,
                                          # C=10, D=512, one per process for its own peak memory: bait,
                                          # alfamix, epig, galaxy, power
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
from utils.samplers import (  # noqa: E402
    alfamix_candidates,
    alfamix_select,
    badge_select,
    bait_select,
    bald_scores,
    epig_scores,
    galaxy_select,
    kcenter_greedy,
    stochastic_select,
)
from utils.samplers.alfamix import class_anchors  # noqa: E402
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


BASELINE_N, BASELINE_C, BASELINE_D, BASELINE_L = 50_000, 10, 512, 1_000


def baseline_inputs():
    """The candidates' softmax and features at N=50,000, C=10, D=512, and a labeled set of 1,000."""
    torch.manual_seed(0)
    logits = 3 * torch.randn(BASELINE_N + BASELINE_L, BASELINE_C)
    return torch.softmax(logits, 1), torch.randn(BASELINE_N + BASELINE_L, BASELINE_D)


def report(name, seconds, note=""):
    print(f"{name}: {seconds:.1f} s, peak RSS {peak_rss_gb():.2f} GB{note}")


def bench_bait():
    probs, emb = baseline_inputs()
    n = BASELINE_N
    _, seconds = timed(lambda: bait_select(probs[:n], emb[:n], probs[n:], emb[n:], 100))
    report("BAIT N=50,000 C=10 D=512 L=1,000, 100 picks (200 forward + 100 backward steps)", seconds,
           f" (a materialised N x C x C*D Fisher embedding would be {n * 10 * 5120 * 4 / 2**30:.1f} GB)")


def bench_alfamix():
    probs, emb = baseline_inputs()
    n = BASELINE_N
    weight, bias = torch.randn(BASELINE_C, BASELINE_D) / BASELINE_D**0.5, torch.zeros(BASELINE_C)
    anchors = class_anchors(emb[n:], probs[n:].argmax(1), BASELINE_C)
    candidates, seconds = timed(lambda: int(alfamix_candidates(emb[:n], weight, bias, anchors, 100).sum()))
    _, total = timed(lambda: alfamix_select(emb[:n], weight, bias, anchors, 100))
    report("ALFAMix N=50,000 C=10 D=512, 100 picks", total,
           f" ({candidates:,} candidates found in {seconds:.1f} s, then k-means with 10 restarts over them)")


def bench_epig():
    torch.manual_seed(0)
    mc = torch.softmax(3 * torch.randn(20, BASELINE_N, BASELINE_C), 2)
    _, seconds = timed(lambda: epig_scores(mc, mc[:, :100]))
    report("EPIG N=50,000 C=10, K=20 MC samples, 100 targets", seconds,
           f" (the unchunked joint would be {BASELINE_N * 100 * 100 * 8 / 2**30:.1f} GB)")


def bench_galaxy():
    probs, _ = baseline_inputs()
    labeled = torch.arange(len(probs)) >= BASELINE_N
    labels = torch.randint(BASELINE_C, (len(probs),))
    graphs = torch.randint(BASELINE_C, (1_000,))
    _, seconds = timed(lambda: galaxy_select(probs, labeled, labels, graphs, torch.Generator().manual_seed(0)))
    report("GALAXY 51,000 nodes C=10, 1,000 picks", seconds)


def bench_power():
    torch.manual_seed(0)
    mc = torch.softmax(3 * torch.randn(20, BASELINE_N, BASELINE_C), 2)
    _, seconds = timed(lambda: stochastic_select(bald_scores(mc), 1_000, "power", 1.0, torch.Generator()))
    report("PowerBALD N=50,000 C=10, K=20, 1,000 picks (BALD included)", seconds)


BENCHES = {"kcenter": bench_kcenter, "badge": bench_badge, "mc": bench_mc, "big": bench_big, "bait": bench_bait,
           "alfamix": bench_alfamix, "epig": bench_epig, "galaxy": bench_galaxy, "power": bench_power}

if __name__ == "__main__":
    for name in sys.argv[1:] or ["kcenter", "badge", "mc", "big"]:
        BENCHES[name]()
