"""Training and inference helpers shared by the entry scripts."""

from collections.abc import Callable

import torch

from utils.core import distributed
from utils.core.data import make_loader
from utils.core.progress import active_run


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

    Progress goes through the running Run (``utils.core.progress.active_run()``): a bar on a terminal, else
    ``[<desc>] scoring n/N images ...`` lines when it takes longer than PROGRESS_PERIOD; ``desc`` defaults
    to ``test`` for the test set, ``query`` otherwise.
    """
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
