"""EPIG, the expected predictive information gain (Bickford Smith et al., "Prediction-Oriented
Bayesian Active Learning", AISTATS 2023): the information a label y of x gives about the label
y_* of a target input x_* drawn from the target distribution, estimated over K posterior samples
(with the identity I(y; y_*) = H[y] + H[y_*] - H[y, y_*]):

    EPIG(x) = H[p(y|x)] + E_{x_*}[H[p(y_*|x_*)]] - E_{x_*}[H[p(y, y_*|x, x_*)]],
    p(y, y_*|x, x_*) = 1/K sum_k p(y|x, theta_k) p(y_*|x_*, theta_k).

The posterior samples are MC-dropout passes with one mask per pass for all inputs (the joint needs
the same theta_k on x and x_*); the target inputs are ``EPIG_TARGETS`` (100, the authors'
``n_target_samples``) candidates drawn at random at every query.
"""

import numpy as np
import torch

from utils.core.config import Key
from utils.samplers.diversity import CHUNK_ELEMENTS
from utils.samplers.registry import Need, QueryContext, register_scorer
from utils.samplers.uncertainty import entropy_scores


def epig_scores(mc_pool: torch.Tensor, mc_target: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """EPIG of every pool input, in nats, from K samples ``mc_pool[K, N, C]`` and ``mc_target[K, T, C]``
    (the same K parameter samples). The joint predictive of a block of pool inputs and a block of
    targets, [n, C, t*C], is one matrix product; blocks hold at most ``chunk_elements`` numbers, so
    memory is O(K (N + T) C + chunk_elements), never N x T x C^2. In float64 for float64 samples, else
    float32 (as baal)."""
    k, n_pool, classes = mc_pool.shape
    n_target = mc_target.shape[1]
    dtype = torch.float64 if mc_pool.dtype == torch.float64 else torch.float32
    pool, target = mc_pool.to(dtype), mc_target.to(dtype)
    marginal_pool = entropy_scores(pool.mean(0))
    marginal_target = entropy_scores(target.mean(0)).mean()
    target_block = max(1, min(n_target, chunk_elements // classes**2))
    rows = max(1, chunk_elements // (classes**2 * target_block))
    pool_by_row = pool.permute(1, 2, 0)  # [N, C, K]
    joint_entropy = torch.zeros(n_pool, dtype=dtype, device=pool.device)
    for t in range(0, n_target, target_block):
        targets = target[:, t:t + target_block].reshape(k, -1)  # [K, t*C]
        for start in range(0, n_pool, rows):
            joint = torch.matmul(pool_by_row[start:start + rows], targets) / k  # [n, C, t*C]
            joint_entropy[start:start + rows] -= torch.special.xlogy(joint, joint).sum((1, 2))
    return marginal_pool + marginal_target - joint_entropy / n_target


@register_scorer("EPIG", aliases=("expected_predictive_information_gain",), needs=(Need.MC_DROPOUT,), params={
    "TARGETS": Key(100, "EPIG: target inputs drawn from the candidates at every query (the authors' n_target_samples)",
                   minimum=1)})
def epig(ctx: QueryContext) -> torch.Tensor:
    mc = ctx.mc_probs(consistent=True)
    n = mc.shape[1]
    targets = np.sort(ctx.rng.choice(n, min(n, ctx.params.targets), replace=False))
    return epig_scores(mc, mc[:, torch.from_numpy(targets)])
