"""ALFA-Mix (Parvaneh et al., "Active Learning by Feature Mixing", CVPR 2022): an unlabeled
point is a candidate when mixing its penultimate feature z with the mean feature z*_c of a labeled
class (the anchor) changes the model's prediction,

    z~ = (1 - alpha) z + alpha z*_c,   alpha = eps ||z*_c - z|| / ||g|| * g / (z*_c - z)  (elementwise),

the closed-form alpha of the paper (g: the gradient of the cross-entropy at the predicted label
with respect to z, eps = alpha_cap / sqrt(D)). alpha_cap grows by ``ALFAMIX_ALPHA_CAP`` (the
authors' 1/32) up to 1 until there are more candidates than the query; then k-means (k = the query
size) over the L2-normalised features of the candidates takes the candidate nearest each centre,
and random points fill a query with fewer candidates. The classifier head is the model's own last
linear layer (the one whose softmax reproduces the candidates' probabilities).
"""

import math

import numpy as np
import torch
from torch import nn

from utils.core.config import Key
from utils.samplers.diversity import CHUNK_ELEMENTS, kmeans_select
from utils.samplers.registry import QueryContext, linear_head, register_selector


def class_anchors(labeled_features: torch.Tensor, labeled_labels: torch.Tensor, classes: int) -> torch.Tensor:
    """[C, D] the mean labeled feature of each class; a class without labels takes the mean of all (no
    labels at all: no anchors, [0, D])."""
    feats = labeled_features.float()
    if len(feats) == 0:
        return feats
    sums = torch.zeros(classes, feats.shape[1]).index_add_(0, labeled_labels, feats)
    counts = torch.bincount(labeled_labels, minlength=classes)[:classes].float()
    return torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], feats.mean(0))


def alfamix_changes(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, anchors: torch.Tensor,
                    eps: float, chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Whether the prediction ``argmax(W z + b)`` of each feature z changes when z is mixed with any
    anchor by the closed-form alpha at step ``eps``, [N] bool; C x chunk x D numbers at a time."""
    features = features.float()
    rows = max(1, chunk_elements // (max(1, len(anchors)) * features.shape[1]))
    changed = torch.zeros(len(features), dtype=torch.bool)
    for start in range(0, len(features), rows):
        z = features[start:start + rows]
        logits = z @ weight.T + bias
        pred = logits.argmax(1)
        residual = torch.softmax(logits, 1)
        residual[torch.arange(len(z)), pred] -= 1.0
        grad = residual @ weight  # d CE(W z + b, pred) / dz
        towards = anchors[:, None] - z[None]  # [C, n, D]
        scale = eps * towards.norm(dim=2, keepdim=True) / grad.norm(dim=1).clamp_min(1e-12)[None, :, None]
        alpha = scale * grad[None] / (towards + 1e-8)
        mixed = (1 - alpha) * z[None] + alpha * anchors[:, None]
        changed[start:start + rows] = ((mixed @ weight.T + bias).argmax(2) != pred[None]).any(0)
    return changed


def alfamix_candidates(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, anchors: torch.Tensor,
                       query_size: int, alpha_cap: float = 1 / 32) -> torch.Tensor:
    """The candidate mask: the union of the changes at alpha caps alpha_cap, 2 alpha_cap, ... up to 1,
    stopping once more than ``query_size`` points changed."""
    candidate = torch.zeros(len(features), dtype=torch.bool)
    cap = 0.0
    while cap < 1.0:
        cap += alpha_cap
        candidate |= alfamix_changes(features, weight, bias, anchors, cap / math.sqrt(features.shape[1]))
        if int(candidate.sum()) > query_size:
            break
    return candidate


def alfamix_select(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, anchors: torch.Tensor,
                   query_size: int, alpha_cap: float = 1 / 32, seed: int = 0) -> torch.Tensor:
    """ALFA-Mix's query: k-means (k = min(query size, candidates)) over the L2-normalised features of
    the candidates, the candidate nearest each centre, then random non-candidates up to the query
    size (drawn from ``seed``). Returns positions."""
    candidate = alfamix_candidates(features, weight, bias, anchors, query_size, alpha_cap)
    members = torch.nonzero(candidate).flatten()
    picked = members[:0]
    if len(members):
        normalised = nn.functional.normalize(features[members].float(), dim=1)
        picked = members[kmeans_select(normalised, min(query_size, len(members)), seed=seed)]
    others = torch.nonzero(~candidate).flatten()
    fill = others[torch.from_numpy(np.random.default_rng(seed).permutation(len(others))[:query_size - len(picked)])]
    return torch.cat([picked, fill])


@register_selector("ALFAMix", aliases=("alfa_mix", "alpha_mix", "alphamix"), params={
    "ALPHA_CAP": Key(1 / 32, "ALFAMix: the step of the interpolation cap, grown up to 1 until the candidates "
                     "outnumber the query (the authors' 0.03125)", above=0, maximum=1)})
def alfamix(ctx: QueryContext) -> torch.Tensor:
    features = ctx.features()
    head = linear_head(ctx.model, features[:256], ctx.probs()[:256], "ALFAMix")
    labels = torch.as_tensor(np.asarray(ctx.data.train_targets)[ctx.labeled_idx], dtype=torch.long)
    anchors = class_anchors(ctx.labeled_features().cpu(), labels, ctx.data.num_classes)
    weight, bias = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
    return alfamix_select(features.cpu(), weight, bias, anchors, ctx.query_size, ctx.params.alpha_cap,
                          seed=int(ctx.rng.integers(2**31)))
