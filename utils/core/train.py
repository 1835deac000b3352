"""Training and inference helpers shared by the entry scripts."""

import random
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch

from utils.core import distributed
from utils.core.cli import UserError
from utils.core.data import make_loader


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(dist=None):
    """Every global RNG state, for exact resume. On CUDA, each rank's own device state (a collective: every rank
    calls it under torch.distributed): row r of ``state["cuda"]`` is rank r's."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]  # loadable with weights_only
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if dist is not None and dist.device.type == "cuda":
        state["cuda"] = distributed.gather_rows(torch.cuda.get_rng_state(dist.device)[None], dist)
    return state


def set_rng_state(state, dist=None):
    """The states of ``rng_state``; on CUDA this rank's device gets its own row (a rank the checkpoint has no
    row for, e.g. after a resume with more processes, keeps its seeded state), whatever the GPUs visible."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if saved is not None and dist is not None and dist.device.type == "cuda" and dist.rank < len(saved):
        torch.cuda.set_rng_state(saved[dist.rank], dist.device)


@torch.no_grad()
def predict(model, data, indices, fn, batch_size, dist, workers=0, forward=None, pass_indices=False, desc=None,
            transform=None):
    """``fn(model_output, targets)`` for every sample of ``indices`` of the training set (the
    test set when ``indices`` is ``'test'``), in the order of ``indices``, on the CPU.

    Runs in eval mode on the plain view (``transform``: another view of the uint8 batches, e.g.
    ``data.train_transform``'s random crops and flips), under --amp's autocast (``fn`` sees float32
    outputs); ``forward(x)`` replaces ``model(x)`` when given
    (``forward(x, batch_indices)`` with ``pass_indices``: the batch's dataset indices). Under
    torch.distributed every rank scores a contiguous shard and the shards are gathered.

    Progress goes through the running Run (``utils.core.loop.active_run()``): a bar on a terminal, else
    ``[<desc>] scoring n/N images ...`` lines when it takes longer than PROGRESS_PERIOD; ``desc`` defaults
    to ``test`` for the test set, ``query`` otherwise.
    """
    from utils.core.loop import active_run  # (here: utils.core.loop imports this module)

    dataset = data.train
    if isinstance(indices, str) and indices == "test":
        dataset, indices = data.test, data.test_idx
        desc = desc or "test"
    if len(indices) == 0:
        raise ValueError("predict() needs at least one index")
    loader = make_loader(dataset, distributed.shard(indices, dist), batch_size, workers=workers)
    was_training = model.training
    model.eval()
    precision = dist.precision
    precision.prepare(model)
    call = forward or model
    outputs = []
    run, scored = active_run(), 0
    report = run.counter(desc or "query", "scoring", len(indices), "images") if run is not None else None
    try:
        for images, targets, batch_indices in loader:
            images = (transform or data.eval_transform)(images.to(dist.device, non_blocking=True))
            out = precision.forward(call, images, batch_indices) if pass_indices else precision.forward(call, images)
            outputs.append(fn(out, targets.to(dist.device)).cpu())
            if report is not None:  # (rank 0 reports: its shard's count times the ranks, equal shards)
                count = min(len(images) * dist.world_size, len(indices) - scored)
                scored += count
                report.update(count)
    finally:
        if report is not None:
            report.close()
    model.train(was_training)
    return distributed.gather_rows(torch.cat(outputs), dist)[: len(indices)]


def fit(loader, epochs: int, step: Callable, run, desc: str, epoch_start: Callable | None = None,
        epoch_end: Callable | None = None, with_indices: bool = False, with_position: bool = False,
        optimizer: torch.optim.Optimizer | None = None, stop: Callable | None = None) -> None:
    """``epochs`` passes over ``loader`` (a new shuffle each), calling ``step(images, targets)``
    on every uint8 batch (``step(images, targets, indices)`` with ``with_indices``;
    ``step(images, targets, indices, position)`` with ``with_position``, ``position`` = epoch +
    batch / batches, the fractional epoch of per-iteration schedules); ``step`` returns the batch
    loss (a float). ``epoch_start(epoch)`` and ``epoch_end(epoch)`` run around each pass (modes,
    schedules); the mean loss (and ``optimizer``'s learning rate at the epoch's last step) goes to
    the progress bar and tensorboard; within an epoch the bar (or the progress lines) follows the batches.
    ``stop(summed_loss)`` after an epoch: True ends the training there (an early stop)."""
    bar = run.progress(range(epochs), desc, what="train epoch")
    for epoch in bar:
        loader.batch_sampler.set_epoch(epoch)
        if epoch_start is not None:
            epoch_start(epoch)
        length = len(loader)
        total, batches, steps = 0.0, 0, max(1, length) if with_position else 1
        for images, targets, indices in loader:
            if with_position:
                total += step(images, targets, indices, epoch + batches / steps)
            else:
                total += step(images, targets, indices) if with_indices else step(images, targets)
            batches += 1
            run.log_batch(bar, epoch, batches, length, total / batches,
                          optimizer.param_groups[0]["lr"] if optimizer is not None else None)
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
        if epoch_end is not None:
            epoch_end(epoch)
        run.log_epoch(bar, desc, epoch, total / max(batches, 1), lr)
        if stop is not None and stop(total):
            break


def evaluate(model, data, batch_size, dist, workers=0):
    """Top-1 accuracy (%) of the main head on the test set."""
    correct = predict(model, data, "test", lambda out, y: out.logits.argmax(1) == y, batch_size, dist, workers)
    return 100.0 * correct.float().mean().item()


def softmax_probs(out, _targets):
    return torch.softmax(out.logits.float(), dim=1)


@contextmanager
def mc_dropout(model):
    """Eval mode (BatchNorm uses running statistics) with every dropout layer of the model
    kept stochastic; yields the dropout layers. Raises if the model has none."""
    from models.layers import ConsistentDropout

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
