"""LfOSA's query rules (Ning et al., CVPR'22, Sec. 3.3; spec 004 B.5) over raw logits.

The max activation value MAV(x) = max_j o_j(x) of a network trained on the known classes (plus,
for LfOSA's detector, a class K for queried unknowns) is large for known-class samples. Per
predicted class a two-component 1-d Gaussian mixture is fitted to the MAVs; the posterior of the
component with the larger mean is the probability that a sample is known. The top scores are
queried over all classes together (no per-class quota).

* ``Max_AV`` (the "Certainty" baseline): MAV itself.
* ``AV_based``: the GMM posterior, every predicted class.
* ``AV_uncertainty``: the same on MAV x entropy.
* ``AV_temperature`` (LfOSA): ``AV_based`` on the detector, samples predicted as the unknown
  class K score 0.
"""

import warnings
from collections.abc import Container

import numpy as np
import torch

from utils.samplers.registry import Need, QueryContext, register_scorer
from utils.samplers.uncertainty import entropy_scores

GMM_OPTIONS = {"max_iter": 10, "tol": 1e-2, "reg_covar": 5e-4}  # the seed's GaussianMixture settings


def max_activations(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(MAV, predicted class) per row of raw ``logits`` [N, C] (no softmax, no temperature)."""
    values, predicted = logits.float().max(dim=1)
    return values, predicted


def known_posteriors(values: np.ndarray, groups: np.ndarray, seed: int = 0, skip: Container[int] = ()) -> torch.Tensor:
    """Per group g (a predicted class), a 2-component GaussianMixture on ``values`` of the group;
    a sample's score is the posterior of the component with the larger mean. Groups in ``skip``
    and groups of fewer than 2 samples score 0. Vectorised per group; seeded."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    scores = np.zeros(len(values))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        if group in skip or len(members) < 2:
            continue
        x = values[members, None]
        gmm = GaussianMixture(n_components=2, random_state=seed, **GMM_OPTIONS)
        with warnings.catch_warnings():  # 10 EM steps rarely converge to tol; identical values leave 1 cluster
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(x)
        scores[members] = gmm.predict_proba(x)[:, int(np.argmax(gmm.means_[:, 0]))]
    return torch.from_numpy(scores)


def av_scores(logits: torch.Tensor, seed: int = 0, unknown_class: int | None = None,
              times_entropy: bool = False) -> torch.Tensor:
    """The GMM posterior of ``known_posteriors`` on the MAV (``times_entropy``: on MAV x the
    softmax entropy) grouped by the predicted class; rows predicted as ``unknown_class`` score 0."""
    values, predicted = max_activations(logits)
    if times_entropy:
        values = values * entropy_scores(torch.softmax(logits.float(), dim=1))
    skip = () if unknown_class is None else (unknown_class,)
    return known_posteriors(values.numpy(), predicted.numpy(), seed, skip)


def _logits(ctx: QueryContext) -> torch.Tensor:
    return ctx.predict(lambda out, _y: out.logits.float())


def _seed(ctx: QueryContext) -> int:
    return int(ctx.rng.integers(2**31))


@register_scorer("Max_AV", aliases=("certainty",))
def max_av(ctx: QueryContext) -> torch.Tensor:
    """The largest raw logit first."""
    return max_activations(_logits(ctx))[0]


@register_scorer("AV_based")
def av_based(ctx: QueryContext) -> torch.Tensor:
    return av_scores(_logits(ctx), _seed(ctx))


@register_scorer("AV_uncertainty")
def av_uncertainty(ctx: QueryContext) -> torch.Tensor:
    return av_scores(_logits(ctx), _seed(ctx), times_entropy=True)


@register_scorer("AV_temperature", aliases=("LfOSA",), needs=(Need.UNKNOWN_CLASS,))
def av_temperature(ctx: QueryContext) -> torch.Tensor:
    """LfOSA: ``ctx.extras['unknown_class']`` is the detector's output for queried unknowns."""
    return av_scores(_logits(ctx), _seed(ctx), unknown_class=ctx.extras["unknown_class"])
