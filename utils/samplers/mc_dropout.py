"""MC dropout (Gal & Ghahramani, 2016): the dropout layers of a model kept stochastic at scoring
time, and the softmax outputs of K such passes over the pool (BALD, BatchBALD, the *Dropout scores)."""

from contextlib import contextmanager

import torch

from models.layers import ConsistentDropout
from utils.core.errors import UserError
from utils.core.train import predict


@contextmanager
def mc_dropout(model):
    """Eval mode (BatchNorm uses running statistics) with every dropout layer of the model
    kept stochastic; yields the dropout layers. Raises if the model has none."""
    layers = [m for m in model.modules() if isinstance(m, ConsistentDropout) and m.p > 0]
    if not layers:
        raise UserError("this strategy needs a model with dropout (MC dropout); the model has none")
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.mc_active = True
    try:
        yield layers
    finally:
        for layer in layers:
            layer.mc_active = False
            layer.fix_mask(None)
        model.train(was_training)


def mc_dropout_probs(model, data, indices, samples: int, batch_size: int, dist, workers: int = 0, seed: int = 0, *,
                     consistent: bool = True) -> torch.Tensor:
    """Softmax outputs of ``samples`` MC-dropout passes, ``[K, N, C]``, over training-set ``indices``
    (p(y | x, omega_k), omega_k ~ q(omega): Gal & Ghahramani, 2016, Eq. 8), on the CPU.

    ``consistent=True``: pass k uses one dropout mask per layer for the whole pool (seeded from ``seed``
    and k), so the k-th outputs of all points come from the same network omega_k (BatchBALD's joint
    entropies need this, Kirsch et al., 2019, Sec. 3). ``consistent=False``: every sample gets its own
    mask per pass, drawn from (``seed``, k, layer, its dataset index), so points' estimates are
    independent (BALD, the *Dropout scores). Either way the result depends on neither the batch size
    nor the order of ``indices`` nor the number of processes. Models that split at their first dropout
    (``mc_trunk``/``mc_head``) run the trunk once per batch and only the head K times.
    """
    split = hasattr(model, "mc_trunk")
    with mc_dropout(model) as layers:
        def k_passes(x, batch_indices):  # the batch's dataset indices key the independent masks
            trunk = model.mc_trunk(x) if split else x
            outputs = []
            for k in range(samples):
                for i, layer in enumerate(layers):
                    layer.fix_mask(seed * 1_000_003 + k * 101 + i, None if consistent else batch_indices)
                out = model.mc_head(trunk) if split else model(trunk)
                outputs.append(torch.softmax(out.logits.float(), dim=1))
            return torch.stack(outputs, dim=1)

        probs = predict(model, data, indices, lambda out, _y: out, batch_size, dist, workers, forward=k_passes,
                        pass_indices=True)
    return probs.permute(1, 0, 2).contiguous()
