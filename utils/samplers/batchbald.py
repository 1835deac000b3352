"""BatchBALD (Kirsch, van Amersfoort & Gal, NeurIPS'19): a batch of points that is jointly informative.

The acquisition function (Sec. 3) is the mutual information between the labels of the whole batch and
the weights, I(y_1..y_n; omega), which splits into a joint entropy minus a sum of conditional entropies::

    a_BatchBALD({x_1..x_n}) = H(y_1..y_n) - sum_i E_omega[H(y_i | omega)]

computed from K consistent MC-dropout samples omega_k: p(y_1..y_n) = 1/K sum_k prod_i p(y_i | omega_k).
It is submodular, so the batch is built greedily (Algorithm 1, a 1 - 1/e approximation): step n takes the
candidate x maximising a_BatchBALD({x_1..x_{n-1}, x}). The conditional entropies are additive, so only the
joint entropy changes from candidate to candidate.

Joint entropy. With the batch chosen so far summarised by configurations j of its labels (rows), each with a
weight w_j, a per-omega likelihood P(j | omega_k) and the posterior R[j, k] = P(j | omega_k) / sum_k' P(j | omega_k'),
the chain rule gives, for a candidate x with probabilities p_k(y) = p(y | x, omega_k),

    H(y_1..y_{n-1}, y) = H(y_1..y_{n-1}) + sum_j w_j H(sum_k R[j, k] p_k(.))

* exact (while C^n <= ``num_samples``): the rows are all C^(n-1) label configurations and
  w_j = p(j) = 1/K sum_k P(j | omega_k);
* sampled (the paper's Monte-Carlo estimate of the joint entropy, for larger batches): S = ``num_samples``
  configurations y^_s ~ p(y_1..y_{n-1}) (omega_k uniform, then y_i ~ p(y_i | omega_k)), w_s = 1/S and
  H(y_1..y_{n-1}) ~= -1/S sum_s log p(y^_s). This is the paper's importance-weighted estimator
  -1/S sum_s sum_y p(y^_s, y) / p(y^_s) log p(y^_s, y), rearranged. The samples are drawn once, when the
  exact table becomes too large, and every later pick extends each of them with a label drawn under its omega.

Every row-by-candidate product is one matrix product R @ p, chunked over candidates; likelihoods are kept
in log space (float64), so long batches do not underflow.
"""

import math
from typing import Literal

import torch

from utils.core.config import Key
from utils.samplers.registry import QueryContext, register_selector
from utils.samplers.uncertainty import MC, bald_scores

NUM_SAMPLES = 10_000  # sampled configurations y^ (batchbald_redux's examples); the toolkit's 1e7 is infeasible
CANDIDATES_PER_QUERY = 10  # default pre-selection: the top max(MIN_CANDIDATES, 10 x query size) points by BALD
MIN_CANDIDATES = 1_000
CHUNK_ELEMENTS = 2**21  # rows x candidates x classes per block: 16 MB of float64


def _xlogx_sum(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """sum p log p along ``dim`` (0 log 0 = 0)."""
    return (probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(dim)


class _JointState:
    """The batch chosen so far as weighted label configurations (see the module docstring)."""

    def __init__(self, num_omegas: int, dtype: torch.dtype, device: torch.device) -> None:
        self.log_lik = torch.zeros(num_omegas, 1, dtype=dtype, device=device)  # log P(row j | omega_k), [K, rows]
        self.omega = None  # sampled regime: the omega index of every sample, [S]
        self._refresh(exact=True)

    def _refresh(self, exact: bool) -> None:
        """Recompute the posterior R, the row weights and the batch entropy from ``log_lik``."""
        num_omegas = self.log_lik.shape[0]
        log_marginal = torch.logsumexp(self.log_lik, dim=0) - math.log(num_omegas)  # log p(row), [rows]
        self.posterior = torch.softmax(self.log_lik, dim=0).T.contiguous()  # R, [rows, K]
        if exact:
            self.weights = log_marginal.exp()
            self.entropy = -_xlogx_sum(self.weights, 0)
        else:
            self.weights = torch.full_like(log_marginal, 1.0 / len(log_marginal))
            self.entropy = -log_marginal.mean()

    def add_exact(self, log_probs: torch.Tensor) -> None:
        """Extend every configuration by every label of a new point (``log_probs`` [K, C])."""
        self.log_lik = (self.log_lik[:, :, None] + log_probs[:, None, :]).flatten(1)
        self._refresh(exact=True)

    def start_sampling(self, log_probs_chosen: torch.Tensor, num_samples: int, generator: torch.Generator) -> None:
        """Replace the configurations by ``num_samples`` draws from the joint of the chosen points
        (``log_probs_chosen`` [K, m, C]): omega uniform, then every label given that omega."""
        num_omegas, chosen, classes = log_probs_chosen.shape
        self.omega = torch.randint(num_omegas, (num_samples,), generator=generator, device=generator.device)
        self.log_lik = torch.zeros(num_omegas, num_samples, dtype=log_probs_chosen.dtype,
                                   device=log_probs_chosen.device)
        for i in range(chosen):  # a loop over the (few, <= log_C num_samples) points chosen exactly
            self.add_sampled(log_probs_chosen[:, i], generator, refresh=i + 1 == chosen)

    def add_sampled(self, log_probs: torch.Tensor, generator: torch.Generator, refresh: bool = True) -> None:
        """Draw the new point's label for every sample from p(y | omega_s) and update P(y^_s | omega_k)."""
        probs = log_probs.exp().to(generator.device)[self.omega]  # [S, C]
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(log_probs.device)
        self.log_lik += log_probs[:, labels]
        if refresh:
            self._refresh(exact=False)

    def joint_entropies(self, probs: torch.Tensor) -> torch.Tensor:
        """H(y_1..y_{n-1}, y) for every candidate, ``probs`` [K, B, C] -> [B] (chunked over B)."""
        num_omegas, num_candidates, classes = probs.shape
        rows = len(self.weights)
        chunk = max(1, CHUNK_ELEMENTS // (rows * classes))
        result = torch.empty(num_candidates, dtype=probs.dtype, device=probs.device)
        for start in range(0, num_candidates, chunk):
            block = probs[:, start:start + chunk].reshape(num_omegas, -1)
            predictive = (self.posterior @ block).clamp_min_(torch.finfo(probs.dtype).tiny)  # [rows, B * C]
            plogp = predictive.log().mul_(predictive)
            result[start:start + chunk] = -(self.weights @ plogp).view(-1, classes).sum(1)
        return result + self.entropy


def batchbald_select(mc_probs: torch.Tensor, query_size: int, num_samples: int = NUM_SAMPLES,
                     generator: torch.Generator | None = None, max_candidates: int | Literal["auto"] | None = "auto",
                     return_scores: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Greedy BatchBALD (Kirsch et al., 2019, Algorithm 1) over ``mc_probs`` [K, N, C], the softmax outputs
    of K consistent MC-dropout passes (pass k = one network omega_k for all N points).

    Returns ``query_size`` distinct positions into N in pick order (a CPU LongTensor) and, with
    ``return_scores``, also a_BatchBALD of each prefix of the batch (float64, nats; the first is the BALD
    score of the first pick).

    * ``num_samples`` (default 10,000, as in batchbald_redux's examples): the joint entropy is exact while
      the C^n label configurations of the batch number at most ``num_samples``, then estimated from
      ``num_samples`` sampled configurations; one step costs O(num_samples x candidates x C x K).
    * ``max_candidates``: before the greedy loop only the points with the highest BALD scores are kept
      (the sampled steps cost O(candidates)). ``"auto"`` = max(1000, 10 x ``query_size``); ``None`` = all.
    * ``generator`` (a torch.Generator, CPU or on the tensors' device) makes the sampling reproducible.
    """
    num_omegas, num_points, classes = mc_probs.shape
    if not 0 <= query_size <= num_points:
        raise ValueError(f"cannot pick {query_size} points from {num_points}")
    if max_candidates == "auto":
        max_candidates = max(MIN_CANDIDATES, CANDIDATES_PER_QUERY * query_size)
    if max_candidates is None or max_candidates >= num_points:
        candidates = torch.arange(num_points, device=mc_probs.device)
        probs = mc_probs.double()
    else:  # the top BALD points, kept in their original order
        keep = max(max_candidates, query_size)
        candidates = torch.argsort(bald_scores(mc_probs), descending=True, stable=True)[:keep].sort().values
        probs = mc_probs[:, candidates].double()
    probs = probs / probs.sum(2, keepdim=True)  # float32 softmax rows sum to 1 only within 1e-7
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    log_probs = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
    conditional = -_xlogx_sum(probs, 2).mean(0)  # E_omega H(y | x, omega), [N']
    state = _JointState(num_omegas, probs.dtype, probs.device)
    taken = torch.zeros(len(candidates), dtype=torch.bool, device=probs.device)
    picks, scores = [], []
    chosen_conditional = probs.new_zeros(())
    for n in range(query_size):  # n points chosen so far; this step picks point n + 1
        if n > 0:
            last = picks[-1]
            if classes ** (n + 1) <= num_samples:
                state.add_exact(log_probs[:, last])
            elif state.omega is None:
                state.start_sampling(log_probs[:, picks], num_samples, generator)
            else:
                state.add_sampled(log_probs[:, last], generator)
        gains = state.joint_entropies(probs) - conditional - chosen_conditional
        gains[taken] = -math.inf
        pick = int(torch.argmax(gains))  # the first of equal maxima: deterministic
        picks.append(pick)
        scores.append(float(gains[pick]))
        taken[pick] = True
        chosen_conditional = chosen_conditional + conditional[pick]
    positions = candidates[torch.tensor(picks, dtype=torch.long, device=probs.device)].cpu()
    if return_scores:
        return positions, torch.tensor(scores, dtype=torch.float64)
    return positions


@register_selector("BatchBALD", aliases=("batch_bald",), needs=MC, params={
    "SAMPLES": Key(NUM_SAMPLES, "BatchBALD: sampled label configurations once the joint entropy is no longer exact",
                   minimum=1),
    "CANDIDATES": Key(None, "BatchBALD: the highest-BALD points the greedy batch is chosen from (None: max(1000, 10 "
                      "x query size))", type="int", minimum=1)})
def batchbald_positions(ctx: QueryContext) -> torch.Tensor:
    """Greedy BatchBALD on ``ctx.mc_probs(consistent=True)`` (K = ``ctx.mc_samples`` consistent MC-dropout
    passes: pass k is one network omega_k for every candidate), with BATCHBALD_SAMPLES sampled configurations
    and BATCHBALD_CANDIDATES pre-selected points (see batchbald_select)."""
    generator = torch.Generator().manual_seed(int(ctx.rng.integers(2**31)))
    return batchbald_select(ctx.mc_probs(consistent=True).to(ctx.dist.device), ctx.query_size,
                            ctx.params.samples, generator, ctx.params.candidates or "auto")
