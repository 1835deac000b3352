"""MC-dropout masks: independent per sample for BALD and the *Dropout scores, one per pass for the whole
pool (consistent) for BatchBALD; both seeded, and independent of batching, order and sharding."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import utils.samplers.batchbald as batchbald_module
from models import ConsistentDropout, ModelOutput, build_model
from models.layers import hash32_
from utils.core.data import BatchTransform, ImageData, TensorImages
from utils.core.distributed import Dist
from utils.samplers import QueryContext, bald_scores, get_strategy
from utils.samplers.mc_dropout import mc_dropout_probs

pytestmark = pytest.mark.usefixtures("one_thread")

TRANSFORM = BatchTransform((0.5,), (0.25,))


class MLP(nn.Module):
    """16 inputs -> ``width`` features (ReLU) -> dropout 0.5 -> 4 logits, split at the dropout."""

    def __init__(self, width=32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU())
        self.drop = ConsistentDropout(0.5)
        self.fc = nn.Linear(width, 4)

    def mc_trunk(self, x):
        return self.body(x)

    def mc_head(self, h):
        return ModelOutput(4 * self.fc(self.drop(h)), h)

    def forward(self, x):
        return self.mc_head(self.body(x))


def pool(n, twins=(), size=4, channels=1, seed=0):
    """``n`` random uint8 images; image ``b`` is a copy of image ``a`` for every (a, b) in ``twins``."""
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    for a, b in twins:
        images[b] = images[a]
    dataset = TensorImages(images, torch.arange(n) % 4)
    transform = BatchTransform((0.5,) * channels, (0.25,) * channels)
    return ImageData("pool", dataset, None, 4, channels, size, transform, transform, np.arange(n), np.arange(0))


TWINS = [(0, 7), (0, 13), (2, 21), (5, 30)]


def test_hash32_is_lowbias32_in_exact_integer_arithmetic():
    values = np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    x = values.copy()
    with np.errstate(over="ignore"):  # the reference in uint32 arithmetic (wraps mod 2**32)
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    assert torch.equal(hash32_(torch.from_numpy(values.astype(np.int64))), torch.from_numpy(x.astype(np.int64)))
    assert hash32_(torch.tensor([1, 2**32 - 1])).tolist() == [1753845952, 1734902346]


def test_per_sample_masks_depend_on_the_sample_id_only():
    layer = ConsistentDropout(0.3)
    layer.mc_active = True
    ids = torch.arange(100, 2100)
    layer.fix_mask(5, ids)
    kept = layer(torch.ones(2000, 64)) > 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # P(keep) = 1 - p
    assert (kept[1:] != kept[:-1]).any(1).all()  # every sample its own mask
    layer.fix_mask(5, ids[[7, 3, 1999]])  # the same ids in another batch, another order
    assert torch.equal(layer(torch.ones(3, 64)) > 0, kept[[7, 3, 1999]])
    layer.fix_mask(6, ids[[7, 3, 1999]])
    assert not torch.equal(layer(torch.ones(3, 64)) > 0, kept[[7, 3, 1999]])  # another seed, other masks
    channels = ConsistentDropout(0.5, channels=True)
    channels.mc_active = True
    channels.fix_mask(5, ids[:50])
    maps = channels(torch.ones(50, 6, 3, 3))
    assert torch.equal(maps.amax((2, 3)), maps.amin((2, 3)))  # Dropout2d: whole channels, per sample
    assert len(torch.unique(maps.amax((2, 3)), dim=0)) > 25


@pytest.mark.parametrize("consistent", [False, True])
def test_identical_inputs_get_different_outputs_only_with_independent_masks(consistent):
    data = pool(40, TWINS)
    probs = mc_dropout_probs(MLP(), data, np.arange(40), 6, 16, Dist(), seed=3, consistent=consistent)
    for a, b in TWINS:
        same = (probs[:, a] == probs[:, b]).all(1)  # [K]: pass k gave both copies the same output
        assert same.all() if consistent else not same.any()
    assert (probs[0] - probs[1]).abs().max() > 1e-3  # dropout is on in both modes


@pytest.mark.parametrize("consistent", [False, True])
def test_results_depend_on_neither_batch_size_nor_order_nor_sharding(consistent):
    data = pool(64)
    model = MLP()
    indices = np.arange(64)

    def run(idx, batch_size, seed=11):
        return mc_dropout_probs(model, data, idx, 5, batch_size, Dist(), seed=seed, consistent=consistent)

    reference = run(indices, 64)
    assert torch.equal(run(indices, 64), reference)  # a repeat run
    assert torch.allclose(run(indices, 3), reference, atol=1e-6)
    order = np.random.default_rng(0).permutation(64)
    assert torch.allclose(run(order, 5), reference[:, order], atol=1e-6)
    halves = torch.cat([run(order[:29], 8), run(order[29:], 8)], dim=1)  # two "ranks", each scoring a part
    assert torch.allclose(halves, reference[:, order], atol=1e-6)
    assert not torch.allclose(run(indices, 64, seed=12), reference, atol=1e-3)  # the seed matters


def test_lenet_channel_and_element_dropout_keep_the_trunk_once_path():
    data = pool(24, [(1, 9)], size=28)
    model = build_model("lenet", 4, 1, image_size=28).eval()
    calls = []
    model.mc_trunk = lambda x, trunk=model.mc_trunk: calls.append(len(x)) or trunk(x)
    probs = mc_dropout_probs(model, data, np.arange(24), 4, 10, Dist(), seed=0, consistent=False)
    assert calls == [10, 10, 4]  # the trunk runs once per batch, the head K times
    assert not (probs[:, 1] == probs[:, 9]).all(1).any()
    assert torch.allclose(probs, mc_dropout_probs(model, data, np.arange(24), 4, 24, Dist(), seed=0,
                                                  consistent=False), atol=1e-6)


def test_independent_masks_keep_every_bald_query_near_the_exact_value():
    """Per point both schemes draw i.i.d. masks, so a point's K=10 estimate has the same error
    distribution; with one mask per pass the errors of all points move together, so some queries are
    far off as a whole. Exact reference: BALD over all 2^8 equally likely masks of the 8-unit layer.
    Over 16 seeds the pool's mean squared error spreads 12x less and its worst seed is 3.6x lower (0.08
    and 0.28; over 10 models and pools 0.08-0.35 and 0.22-0.88)."""
    n = 400
    data, model = pool(n), MLP(width=8).eval()
    with torch.no_grad():
        hidden = model.body(data.eval_transform(data.train.images))
        masks = torch.tensor(list(itertools.product([0.0, 2.0], repeat=8)))  # keep / (1 - p)
        exact = bald_scores(torch.softmax(4 * model.fc(masks[:, None] * hidden), -1).double())
    errors = {}
    for consistent in (True, False):
        errors[consistent] = torch.tensor([
            (bald_scores(mc_dropout_probs(model, data, np.arange(n), 10, n, Dist(), seed=seed,
                                          consistent=consistent).double()) - exact).pow(2).mean()
            for seed in range(16)])
    shared, independent = errors[True], errors[False]
    assert independent.std() < 0.4 * shared.std()
    assert independent.max() < 0.9 * shared.max()


def context(data, candidates, seed=0):
    return QueryContext(MLP().eval(), data, np.setdiff1d(np.arange(len(data.train)), candidates),
                        np.asarray(candidates), 3, Dist(), batch_size=16, rng=np.random.default_rng(seed),
                        mc_samples=8)


@pytest.mark.parametrize("name", ["BALDDropout", "LeastConfidenceDropout", "MarginSamplingDropout",
                                  "EntropySamplingDropout"])
def test_bald_and_the_dropout_scores_use_independent_masks(name):
    data = pool(40, TWINS)
    scores = get_strategy(name).scores(context(data, np.arange(40)))
    for a, b in TWINS:  # copies of one image: the same score only if they shared every mask
        assert scores[a] != scores[b]
    assert torch.equal(scores, get_strategy(name).scores(context(data, np.arange(40))))  # seeded


def test_batchbald_uses_consistent_masks(monkeypatch):
    seen = []
    select = batchbald_module.batchbald_select
    monkeypatch.setattr(batchbald_module, "batchbald_select", lambda probs, *a, **k: seen.append(probs) or
                        select(probs, *a, **k))
    data = pool(40, TWINS)
    chosen = get_strategy("BatchBALD").select(context(data, np.arange(40)))
    assert len(set(chosen.tolist())) == 3
    (probs,) = seen
    for a, b in TWINS:  # pass k is one network for every candidate: copies agree in every pass
        assert torch.equal(probs[:, a], probs[:, b])
    assert (probs[0] - probs[1]).abs().max() > 1e-3
