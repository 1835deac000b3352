"""MCADL, multi-criteria active deep learning (Yuan et al., Knowledge-Based Systems'19), as the
toolkit's ``MCADL`` describes it (spec 003, 6.21): a weighted sum of two data criteria (density
and similarity to the labeled samples of the pseudo-class, on the cosine similarity of raw pixels)
and two model criteria (an uncertainty over the top classes and a per-class weight from the
per-class accuracy), with weights that decay with the training accuracy.

The toolkit builds the N x N pixel cosine matrix at construction (about 20 GB in float64 at CIFAR
size); here the candidates x labeled similarities are streamed in blocks of at most
CHUNK_ELEMENTS, each reduced at once to running top-5 neighbours and per-class sums and maxima:
exact, memory O((R + B) P + R C) for R x B blocks of P-pixel images.
"""

import math

import torch

from utils.samplers.diversity import CHUNK_ELEMENTS
from utils.samplers.registry import Need, QueryContext, register_scorer

NEIGHBOURS = 5  # labeled neighbours whose labels vote for the pseudo-class
MASS = 0.5  # the uncertainty looks at the fewest top classes holding more than this probability
ACCURACY_SWITCH = 0.5  # below it (some class), class weights follow the accuracy gains, else 1 / accuracy
ALPHA0 = BETA0 = 0.9  # alpha = beta = 0.9 exp(-training accuracy)


def top_mass_uncertainty(probs: torch.Tensor, mass: float = MASS) -> torch.Tensor:
    """1 - the mean absolute deviation of the k largest probabilities, k the fewest classes whose
    probabilities sum to more than ``mass``, at least 2 (best vs. second best: for k = 2 it is
    1 - (p_(1) - p_(2)) / 2). Higher = more uncertain."""
    top = probs.sort(dim=1, descending=True).values
    k = ((top.cumsum(1) <= mass).sum(1) + 1).clamp(min=2, max=probs.shape[1])
    inside = (torch.arange(probs.shape[1], device=probs.device)[None] < k[:, None]).to(top.dtype)
    mean = (top * inside).sum(1) / k
    return 1 - ((top - mean[:, None]).abs() * inside).sum(1) / k


def class_weights(accuracy: torch.Tensor, last_accuracy: torch.Tensor, switch: float = ACCURACY_SWITCH) -> torch.Tensor:
    """The label-based weight of each class from its accuracy now and at the previous query: while
    some class is below ``switch``, the classes that improved most (max(0, gain), normalised;
    uniform when none improved); then the weakest classes (1 / accuracy, normalised)."""
    accuracy, last_accuracy = accuracy.double(), last_accuracy.double()
    if accuracy.min() < switch:
        gain = (accuracy - last_accuracy).clamp_min(0)
        return gain / gain.sum() if gain.sum() > 0 else torch.full_like(accuracy, 1 / len(accuracy))
    inverse = 1 / accuracy
    return inverse / inverse.sum()


def _unit_rows(pixels: torch.Tensor) -> torch.Tensor:
    rows = pixels.flatten(1).float()
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def pixel_neighbour_terms(pool: torch.Tensor, labeled: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          neighbours: int = NEIGHBOURS, chunk_elements: int = CHUNK_ELEMENTS
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every pool image, with S = the cosine similarity of raw pixels (any dtype, one image per
    row): its pseudo-class c, the majority label of its ``neighbours`` most similar labeled images
    (ties: the lowest class), its density 1 - mean_{j in L_c} S(i, j) and its similarity
    1 - max_{j in L_c} S(i, j) to the labeled images L_c of that class. Exact, in blocks of at most
    ``chunk_elements`` similarities (never pool x labeled at once)."""
    n, m = len(pool), len(labeled)
    if m == 0:
        raise ValueError("MCADL needs labeled images")
    labels = labels.long()
    cols = max(1, min(m, int(math.sqrt(chunk_elements))))
    rows = max(1, chunk_elements // cols)
    counts = torch.bincount(labels, minlength=num_classes).float()
    knn = min(neighbours, m)
    pseudo = torch.empty(n, dtype=torch.long)
    density, similarity = torch.empty(n), torch.empty(n)
    for r0 in range(0, n, rows):
        part = _unit_rows(pool[r0:r0 + rows])
        best = torch.full((len(part), 0), -math.inf)
        best_labels = torch.zeros((len(part), 0), dtype=torch.long)
        sums = torch.zeros(len(part), num_classes)
        maxima = torch.full((len(part), num_classes), -math.inf)
        for c0 in range(0, m, cols):
            block_labels = labels[c0:c0 + cols]
            sim = part @ _unit_rows(labeled[c0:c0 + cols]).T  # [R, B]
            values = torch.cat([best, sim], 1)
            keep = values.topk(min(knn, values.shape[1]), dim=1).indices
            best, before = values.gather(1, keep), best.shape[1]
            earlier = best_labels.gather(1, keep.clamp(max=max(before - 1, 0))) if before else keep
            best_labels = torch.where(keep < before, earlier, block_labels[(keep - before).clamp_min(0)])
            sums.index_add_(1, block_labels, sim)
            maxima.scatter_reduce_(1, block_labels.expand(len(part), -1), sim, reduce="amax")
        votes = torch.nn.functional.one_hot(best_labels, num_classes).sum(1)
        c = votes.argmax(1)  # the first of equal counts: the lowest class
        pseudo[r0:r0 + rows] = c
        density[r0:r0 + rows] = 1 - sums.gather(1, c[:, None])[:, 0] / counts[c]
        similarity[r0:r0 + rows] = 1 - maxima.gather(1, c[:, None])[:, 0]
    return pseudo, density, similarity


def mcadl_scores(probs: torch.Tensor, pseudo: torch.Tensor, density: torch.Tensor, similarity: torch.Tensor,
                 weights: torch.Tensor, train_accuracy: float) -> torch.Tensor:
    """informativeness = alpha (density + similarity) / 2 + (1 - alpha) (beta u + (1 - beta) w_c),
    alpha = beta = 0.9 exp(-training accuracy), u = top_mass_uncertainty, w_c = the weight of the
    pseudo-class c. Higher = queried first."""
    alpha = ALPHA0 * math.exp(-train_accuracy)
    beta = BETA0 * math.exp(-train_accuracy)
    info_data = 0.5 * density.double() + 0.5 * similarity.double()
    info_model = beta * top_mass_uncertainty(probs.double()) + (1 - beta) * weights.double()[pseudo]
    return alpha * info_data + (1 - alpha) * info_model


def _pixels(ctx: QueryContext, indices) -> torch.Tensor:
    images, _, _ = ctx.data.train.__getitems__(list(map(int, indices)))
    return images.flatten(1)


@register_scorer("MCADL", aliases=("multi_criteria", "multi_criteria_active_deep_learning"), needs=(Need.STATE,))
def mcadl(ctx: QueryContext) -> torch.Tensor:
    """MCADL's informativeness of every candidate with the current model: per-class and overall
    accuracy of the model on the labeled set (a class without labeled images counts as 0), class
    weights against the previous query's per-class accuracy (kept in ``ctx.extras['state']``,
    zeros at the first query), pseudo-classes and data terms from the raw pixels of the dataset
    (its stored images)."""
    num_classes = ctx.data.num_classes
    state = ctx.extras["state"]
    labeled = ctx.labeled_idx
    result = ctx.predict(lambda out, y: torch.stack([y, out.logits.argmax(1)], 1), labeled)
    labels, correct = result[:, 0], (result[:, 0] == result[:, 1]).double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    accuracy = torch.bincount(labels, weights=correct, minlength=num_classes) / counts.clamp_min(1)
    last = state.get("mcadl_last_accuracy", torch.zeros(num_classes, dtype=torch.float64))
    weights = class_weights(accuracy, last)
    state["mcadl_last_accuracy"] = accuracy
    pseudo, density, similarity = pixel_neighbour_terms(_pixels(ctx, ctx.candidates), _pixels(ctx, labeled), labels,
                                                        num_classes)
    return mcadl_scores(ctx.probs(), pseudo, density, similarity, weights, float(correct.mean()))
