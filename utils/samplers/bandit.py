"""Active learning by learning (ALBL; Hsu & Lin, AAAI'15): a bandit learns which query strategy
to follow, with EXP4.P (Beygelzimer et al., AISTATS'11, Alg. 1) and a test-free reward, the
importance-weighted accuracy (IW-ACC) of the retrained model on the labels the bandit queried.

As in the toolkit (cure-lab, ``ActiveLearningByLearning``), the arms are the experts themselves
(LeastConfidence and the greedy k-center CoreSet) and one expert is drawn per query, for the whole
batch: the protocol retrains once per query, so a bandit round (one draw, one reward) is one query.
With expert i advising arm i, EXP4.P's probabilities and update are those below (K = N = the
number of experts, so p_min = 1/(10 K) = 0.05 for two experts, as the toolkit).
"""

import math

import numpy as np
import torch

from utils.core.config import Key
from utils.samplers.registry import Need, QueryContext, get_strategy, register_selector, top_k

EXPERTS = ("LeastConfidence", "KCenterGreedy")  # the toolkit's arms


def exp4p_probs(log_weights: torch.Tensor, p_min: float) -> torch.Tensor:
    """EXP4.P step 2 with expert i advising arm i: p_i = (1 - K p_min) w_i / sum_j w_j + p_min
    (weights kept as logarithms)."""
    k = len(log_weights)
    if not 0 <= p_min <= 1 / k:
        raise ValueError(f"p_min must lie in [0, 1/K] = [0, {1 / k:.4g}], got {p_min}")
    return (1 - k * p_min) * torch.softmax(log_weights.double(), 0) + p_min


def exp4p_update(log_weights: torch.Tensor, probs: torch.Tensor, chosen: int, reward: float, p_min: float,
                 delta: float, horizon: int) -> torch.Tensor:
    """EXP4.P steps 5-6 (arm i = expert i): r_hat = reward / p_chosen on the chosen arm and 0
    elsewhere, v_hat_i = 1 / p_i, and
    log w_i += p_min / 2 * (r_hat_i + v_hat_i * sqrt(ln(K / delta) / (K T))), T = ``horizon``.
    ``probs`` are the ones the chosen arm was drawn with; ``reward`` lies in [0, 1]."""
    probs = probs.double()
    k = len(probs)
    r_hat = torch.zeros_like(probs)
    r_hat[chosen] = reward / probs[chosen]
    v_hat = 1.0 / probs
    return log_weights.double() + p_min / 2 * (r_hat + v_hat * math.sqrt(math.log(k / delta) / (k * horizon)))


def iw_accuracy(correct: torch.Tensor, inclusion: torch.Tensor) -> float:
    """IW-ACC (Hsu & Lin): the accuracy on the queried samples, each weighted by 1 / the probability
    with which it was queried, self-normalised, sum_x c_x / pi_x / sum_x 1 / pi_x, so it lies in [0, 1]."""
    weights = 1.0 / inclusion.double()
    return float((correct.double() * weights).sum() / weights.sum())


def _expert_positions(ctx: QueryContext, name: str) -> np.ndarray:
    """The query-size positions the registered strategy ``name`` would pick (its own rule)."""
    strategy = get_strategy(name)
    if strategy.scores is not None:
        return np.asarray(top_k(strategy.scores(ctx), ctx.query_size), dtype=np.int64)
    return np.asarray(strategy.positions(ctx), dtype=np.int64)


def _reward(ctx: QueryContext, state: dict) -> float | None:
    """IW-ACC of the current model on the bandit's queried samples whose labels are known (the ones
    in the labeled set; an open set's discarded and a person's unanswered ones are left out)."""
    queried = state["queried"].numpy()
    known = np.isin(queried, ctx.labeled_idx)
    if not known.any():
        return None
    correct = ctx.predict(lambda out, y: (out.logits.argmax(1) == y).float(), queried[known])
    return iw_accuracy(correct, state["inclusion"][torch.from_numpy(known)])


@register_selector("ActiveLearningByLearning", aliases=("albl", "active_learning_by_learning"), needs=(Need.STATE,),
                   prefix="ALBL", params={
    "DELTA": Key(0.1, "ALBL: EXP4.P's confidence delta (the toolkit's 0.1)", above=0, below=1),
    "HORIZON": Key(None, "ALBL: EXP4.P's horizon T in queries (None: the queries that would empty the pool, fixed at "
                   "the first query)", type="int", minimum=1)})
def albl_positions(ctx: QueryContext) -> np.ndarray:
    """One ALBL round. First the pending query's reward (IW-ACC with the model retrained on its
    labels) updates the weights; then every expert proposes its batch, one expert is drawn with the
    EXP4.P probabilities and its batch is the query. Each queried sample's inclusion probability is
    the total probability of the experts that proposed it. Kept in ``ctx.extras['state']['albl']``
    for the trial: log-weights, horizon T, queried samples with their inclusion probabilities, the
    pending draw, and the history (probabilities, experts drawn, rewards). ALBL_DELTA and ALBL_HORIZON
    are EXP4.P's delta and T."""
    experts = EXPERTS
    p_min = 1.0 / (10 * len(experts))
    state = ctx.extras["state"].setdefault("albl", {})
    if not state:
        horizon = ctx.params.horizon or math.ceil(len(ctx.candidates) / ctx.query_size)
        state.update(log_weights=torch.zeros(len(experts), dtype=torch.float64), horizon=int(horizon),
                     queried=torch.zeros(0, dtype=torch.long), inclusion=torch.zeros(0, dtype=torch.float64),
                     pending=None, probs=torch.zeros(0, len(experts), dtype=torch.float64),
                     chosen=torch.zeros(0, dtype=torch.long), rewards=torch.zeros(0, dtype=torch.float64))
    if state["pending"] is not None:
        reward = _reward(ctx, state)
        if reward is not None:
            pending = state["pending"]
            state["log_weights"] = exp4p_update(state["log_weights"], pending["probs"], pending["expert"], reward,
                                                p_min, ctx.params.delta, state["horizon"])
            state["rewards"] = torch.cat([state["rewards"], torch.tensor([reward], dtype=torch.float64)])
        state["pending"] = None

    probs = exp4p_probs(state["log_weights"], p_min)
    batches = [_expert_positions(ctx, name) for name in experts]
    chosen = int(ctx.rng.choice(len(experts), p=(probs / probs.sum()).numpy()))
    picks = batches[chosen]
    proposed = torch.stack([torch.from_numpy(np.isin(picks, batch)) for batch in batches]).double()  # [K, n]
    inclusion = (probs[:, None] * proposed).sum(0)
    state["queried"] = torch.cat([state["queried"], torch.from_numpy(ctx.candidates[picks]).long()])
    state["inclusion"] = torch.cat([state["inclusion"], inclusion])
    state["pending"] = {"expert": chosen, "probs": probs}
    state["probs"] = torch.cat([state["probs"], probs[None]])
    state["chosen"] = torch.cat([state["chosen"], torch.tensor([chosen])])
    return picks
