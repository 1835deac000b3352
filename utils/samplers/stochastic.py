"""Stochastic batch acquisition (Kirsch et al., "Stochastic Batch Acquisition: A Simple Baseline for
Deep Active Learning", TMLR 2023): instead of the top-k of a score, draw the batch without
replacement from a distribution over the candidates built from the scores s_i (Sec. 3):

* power:     p_i ~ s_i^beta                        (s_i >= 0; PowerBALD is the paper's headline)
* softmax:   p_i ~ exp(beta s_i)
* soft-rank: p_i ~ r_i^(-beta), r_i the rank of s_i (1 = highest)

with beta = 1 (the paper's default). The batch is drawn with the Gumbel-top-k trick: the k largest
log p_i + Gumbel noise are a sample of k draws without replacement, each proportional to p among
the points left (Kool et al., ICML'19), in one sort.

Named variants, one per rule and base score: ``PowerBALD``, ``PowerEntropy``, ``PowerMargin``,
``SoftmaxBALD``, ... ``SoftRankMargin``. BALD is BALDDropout's score (MC dropout, independent masks),
entropy and margin are on the eval-mode softmax; the margin's score is 1 - (p_(1) - p_(2)), which
is non-negative as the power rule needs. Each variant's beta is its setting ``<NAME>_BETA``.
"""

import torch
from scipy.stats import rankdata

from utils.core.config import Key
from utils.samplers.registry import Need, QueryContext, register_selector
from utils.samplers.uncertainty import bald_scores, entropy_scores, margin_scores

RULES = ("power", "softmax", "softrank")


def stochastic_log_weights(scores: torch.Tensor, rule: str, beta: float) -> torch.Tensor:
    """log p_i up to a constant for ``rule`` (power, softmax or softrank) with coefficient ``beta``
    (Kirsch et al., Sec. 3). Power needs scores >= 0; a zero score gets weight 0 (log -inf)."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if rule == "power":
        return beta * scores.clamp_min(0).log()
    if rule == "softmax":
        return beta * scores
    if rule == "softrank":
        ranks = torch.from_numpy(rankdata(-scores.cpu().numpy())).to(scores)  # 1 = highest; ties share the mean
        return -beta * ranks.log()
    raise ValueError(f"unknown stochastic rule {rule!r}; one of {RULES}")


def stochastic_select(scores: torch.Tensor, query_size: int, rule: str, beta: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``query_size`` positions drawn without replacement from p ~ ``rule``(scores, beta), by
    Gumbel-top-k: argsort of log p + Gumbel(0, 1) noise. When fewer than ``query_size`` points have
    p > 0 (power sampling over zero scores), the draw is uniform over all points (as baal)."""
    log_weights = stochastic_log_weights(scores, rule, beta)
    if int(torch.isfinite(log_weights).sum()) < query_size:
        log_weights = torch.zeros_like(log_weights)
    uniform = torch.rand(len(log_weights), generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(torch.float64).tiny)))
    return torch.argsort(log_weights + gumbel, descending=True, stable=True)[:query_size]


def _bald(ctx: QueryContext) -> torch.Tensor:
    return bald_scores(ctx.mc_probs(consistent=False))


def _entropy(ctx: QueryContext) -> torch.Tensor:
    return entropy_scores(ctx.probs())


def _margin(ctx: QueryContext) -> torch.Tensor:
    return 1.0 + margin_scores(ctx.probs())  # 1 - (p_(1) - p_(2)), in [0, 1]


BASES = {"BALD": (_bald, (Need.MC_DROPOUT,)), "Entropy": (_entropy, ()), "Margin": (_margin, ())}
RULE_NAMES = {"power": "Power", "softmax": "Softmax", "softrank": "SoftRank"}


def _register(rule: str, base: str) -> None:
    score, needs = BASES[base]
    name = RULE_NAMES[rule] + base

    def positions(ctx: QueryContext) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(ctx.rng.integers(2**31)))
        return stochastic_select(score(ctx).cpu(), ctx.query_size, rule, ctx.params.beta, generator)

    positions.__doc__ = f"{name}: a {rule} sample (Kirsch et al.) over the {base} scores of the candidates."
    register_selector(name, aliases=(f"{rule}_{base.lower()}",), needs=needs, params={
        "BETA": Key(1.0, f"{name}: the coefficient beta of the {rule} distribution (Kirsch et al.'s 1; "
                    "larger is closer to the top-k)", above=0)})(positions)


for _rule in RULES:
    for _base in BASES:
        _register(_rule, _base)
