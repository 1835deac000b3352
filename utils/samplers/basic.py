"""Random sampling and the two loss-estimating strategies of the TOD paper's comparison:
TOD itself (Huang et al., ICCV'21) and learning loss (LL4AL; Yoo & Kweon, CVPR'19)."""

import numpy as np
import torch

from utils.core.config import Key
from utils.core.train import softmax_probs
from utils.samplers.hooks import LossPredictionHook
from utils.samplers.registry import Need, QueryContext, register_scorer, register_selector


def tod_scores(probs_current: torch.Tensor, probs_previous: torch.Tensor) -> torch.Tensor:
    """Temporal output discrepancy (TOD, Eq. 5 with the cyclic models of Sec. 3.3, "COD"):
    half the squared L2 distance between the softmax outputs of two models, per sample."""
    return 0.5 * (probs_current - probs_previous).pow(2).sum(dim=1)


@register_selector("RandomSampling", aliases=("random", "rand"), model_free=True)
def random_positions(ctx: QueryContext) -> np.ndarray:
    return ctx.rng.choice(len(ctx.candidates), ctx.query_size, replace=False)


@register_scorer("TOD", aliases=("cod",), needs=(Need.PREVIOUS_MODEL,), params={
    "CYCLE0": Key("lowest", "TOD: cycle 0 compares with an untrained network; the authors' code queries the lowest "
                  "discrepancies there (the default), 'highest' as at every later cycle (the paper)",
                  choices=("lowest", "highest"), flags=("--tod-cycle0",))})
def tod(ctx: QueryContext) -> torch.Tensor:
    """COD between the current model and the previous cycle's model; at cycle 0 (the previous model
    untrained) the lowest discrepancies first unless TOD_CYCLE0 is highest."""
    current = ctx.predict(softmax_probs)
    previous = ctx.predict(softmax_probs, model=ctx.extras["previous_model"])
    scores = tod_scores(current, previous)
    return -scores if ctx.cycle == 0 and ctx.params.cycle0 == "lowest" else scores


@register_scorer("LearningLoss", aliases=("ll4al", "lloss", "learning_loss"),
                 training=LossPredictionHook, pool_subset=10_000)
def learning_loss(ctx: QueryContext) -> torch.Tensor:
    """The loss predicted by the LL4AL module from the model's stage features, highest first
    (under main_al.py on a random 10,000 of the pool, read in order)."""
    module = ctx.extras["loss_module"]
    was_training = module.training
    module.eval()
    scores = ctx.predict(lambda out, _y: module(out.stages).float())
    module.train(was_training)
    return scores
