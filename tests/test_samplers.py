"""The strategy registry and the strategies of the TOD scripts, on hand-made models."""

import numpy as np
import pytest
import torch
from torch import nn

from models import ModelOutput
from utils.core.data import BatchTransform, ImageData, TensorImages
from utils.core.distributed import Dist
from utils.core.errors import UserError
from utils.samplers import QueryContext, get_strategy, list_strategies


class LookupModel(nn.Module):
    """Logits = the two pixel values of a 1x1x2 image times ``scale``; stage = the image."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        logits = x.flatten(1) * self.scale
        return ModelOutput(logits, logits, None, [x])


class PixelLoss(nn.Module):
    """'Predicted loss' = the first pixel of the stage map."""

    def forward(self, stages):
        return stages[0].flatten(1)[:, 0]


def tiny_data(pixels):
    images = torch.tensor(pixels, dtype=torch.uint8).view(-1, 1, 1, 2)
    dataset = TensorImages(images, [0] * len(pixels))
    identity = BatchTransform((0.0,), (1 / 255,))  # images reach the model as raw pixel values
    n = len(pixels)
    return ImageData("tiny", dataset, dataset, 2, 1, 1, identity, identity, np.arange(n), np.arange(n))


def context(data, candidates, query_size, **extras):
    return QueryContext(LookupModel(1.0), data, np.array([], dtype=np.int64), np.asarray(candidates), query_size,
                        Dist(), batch_size=2, rng=np.random.default_rng(0), extras=extras)


def test_names_are_case_insensitive_with_seed_aliases():
    assert get_strategy("tod").name == "TOD" and get_strategy("Random").name == "RandomSampling"
    assert get_strategy("LL4AL") is get_strategy("learningloss")
    assert {"RandomSampling", "TOD", "LearningLoss"} <= set(list_strategies())
    with pytest.raises(UserError, match="choose from"):
        get_strategy("no-such-strategy")


def test_tod_queries_the_largest_output_change_between_cycles():
    # the previous model is flat (uniform softmax); the current one is sure where pixels differ most
    data = tiny_data([[0, 0], [9, 0], [0, 3], [5, 5], [1, 0]])
    ctx = context(data, [0, 1, 2, 3, 4], 2, previous_model=LookupModel(0.0))
    tod = get_strategy("TOD")
    assert sorted(tod.select(ctx).tolist()) == [1, 2]
    ctx.cycle = 0  # TOD's cycle-0 rule (TOD_CYCLE0 lowest, the default): the lowest discrepancies
    assert sorted(tod.select(ctx).tolist()) == [0, 3]
    only_some = context(data, [3, 4, 0], 1, previous_model=LookupModel(0.0))
    assert tod.select(only_some).tolist() == [4]  # indices are dataset indices of the candidates


def test_learning_loss_queries_the_largest_predicted_loss():
    data = tiny_data([[3, 0], [7, 0], [1, 0], [9, 0]])
    ctx = context(data, [0, 1, 2, 3], 2, loss_module=PixelLoss())
    assert sorted(get_strategy("LearningLoss").select(ctx).tolist()) == [1, 3]


def test_random_is_seeded_and_takes_distinct_candidates():
    data = tiny_data([[i, 0] for i in range(30)])
    first = get_strategy("random").select(context(data, np.arange(10, 30), 8))
    again = get_strategy("random").select(context(data, np.arange(10, 30), 8))
    assert np.array_equal(first, again) and len(set(first.tolist())) == 8 and first.min() >= 10


def test_missing_inputs_and_oversized_queries_are_user_errors():
    data = tiny_data([[0, 0], [1, 1]])
    with pytest.raises(UserError, match="TOD needs the previous cycle's model, which x.py does not provide"):
        get_strategy("TOD", serves=(), where="x.py")
    with pytest.raises(UserError, match="larger than"):
        get_strategy("random").select(context(data, [0, 1], 3))
