"""Uncertainty scores over predicted class probabilities (higher = queried first).

Single-pass: least confidence, margin and entropy of the eval-mode softmax (Settles, 2009).
MC dropout (Gal et al., ICML'17): the same scores on the mean of K stochastic passes, and BALD,
the mutual information between the label and the weights (Houlsby et al., 2011, Eq. 2). The passes
use an independent dropout mask per sample (``ctx.mc_probs(consistent=False)``), as ordinary dropout:
a point's K-sample estimate has the same distribution either way, but with one mask per pass for the
whole pool the errors of all points move together, so a whole query can be off at once.
Ensembles (Beluch et al., CVPR'18): entropy of the members' mean prediction.
"""

import torch

from utils.samplers.registry import Need, QueryContext, register_scorer

EPS = 1e-12
MC = (Need.MC_DROPOUT,)  # the script must build the model with dropout (ctx.mc_probs)


def least_confidence_scores(probs: torch.Tensor) -> torch.Tensor:
    """1 - max_c p_c."""
    return 1.0 - probs.max(dim=1).values


def margin_scores(probs: torch.Tensor) -> torch.Tensor:
    """-(p_(1) - p_(2)): the smaller the gap between the two most likely classes, the higher."""
    top2 = probs.topk(2, dim=1).values
    return top2[:, 1] - top2[:, 0]


def entropy_scores(probs: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum_c p_c log p_c, in nats (0 log 0 = 0)."""
    return -(probs * probs.clamp_min(EPS).log()).sum(dim=1)


def bald_scores(mc_probs: torch.Tensor) -> torch.Tensor:
    """Mutual information I(y; omega | x) = H(mean_k p_k) - mean_k H(p_k) over K samples
    ``mc_probs[K, N, C]``, in nats."""
    expected_entropy = entropy_scores(mc_probs.flatten(0, 1)).view(mc_probs.shape[:2]).mean(dim=0)
    return entropy_scores(mc_probs.mean(dim=0)) - expected_entropy


@register_scorer("LeastConfidence", aliases=("least_confidence", "lc", "conf"))
def least_confidence(ctx: QueryContext) -> torch.Tensor:
    return least_confidence_scores(ctx.probs())


@register_scorer("MarginSampling", aliases=("margin", "marg"))
def margin(ctx: QueryContext) -> torch.Tensor:
    return margin_scores(ctx.probs())


@register_scorer("EntropySampling", aliases=("entropy", "uncertainty_entropy"))
def entropy(ctx: QueryContext) -> torch.Tensor:
    return entropy_scores(ctx.probs())


@register_scorer("LeastConfidenceDropout", aliases=("least_confidence_dropout",), needs=MC)
def least_confidence_dropout(ctx: QueryContext) -> torch.Tensor:
    return least_confidence_scores(ctx.mc_probs(consistent=False).mean(dim=0))


@register_scorer("MarginSamplingDropout", aliases=("margin_dropout",), needs=MC)
def margin_dropout(ctx: QueryContext) -> torch.Tensor:
    return margin_scores(ctx.mc_probs(consistent=False).mean(dim=0))


@register_scorer("EntropySamplingDropout", aliases=("entropy_dropout",), needs=MC)
def entropy_dropout(ctx: QueryContext) -> torch.Tensor:
    return entropy_scores(ctx.mc_probs(consistent=False).mean(dim=0))


@register_scorer("BALDDropout", aliases=("bald",), needs=MC)
def bald(ctx: QueryContext) -> torch.Tensor:
    return bald_scores(ctx.mc_probs(consistent=False))


@register_scorer("Ensembles", aliases=("ensemble", "ensembles_entropy"), needs=(Need.ENSEMBLE,))
def ensemble_entropy(ctx: QueryContext) -> torch.Tensor:
    """Entropy of the mean softmax of the M members in ``ctx.extras['ensemble']``."""
    members = ctx.extras["ensemble"]
    probs = torch.stack([ctx.predict(lambda out, _y: torch.softmax(out.logits.float(), 1), model=m) for m in members])
    return entropy_scores(probs.mean(dim=0))
