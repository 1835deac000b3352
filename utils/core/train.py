"""Training and inference helpers shared by the entry scripts."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
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


@dataclass(frozen=True)
class Batch:
    """One training batch as a step sees it: uint8 ``images``, ``targets`` and dataset ``indices`` (as the
    loader gives them, on the CPU), the ``epoch``, the ``position`` (epoch + batch / batches: the fractional
    epoch of per-iteration schedules) and ``step``, the optimisation steps taken before it (counted from
    ``fit``'s ``first_step``)."""

    images: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    epoch: int
    position: float
    step: int


Step = Callable[[Batch], "torch.Tensor | float"]  # a training step: the batch's loss (detached) or a float


def train_one_epoch(loader, step: Step, run, bar, epoch: int, optimizer: torch.optim.Optimizer | None = None,
                    first_step: int = 0) -> tuple[float, int]:
    """One pass over ``loader`` (its shuffle for ``epoch``) calling ``step(batch)`` on every batch (see
    :class:`Batch`). The steps' losses are summed where they are (on the training device), so the loop
    waits for the device only when the progress shows the running loss (``run.log_batch``, at most every
    BAR_REFRESH or PROGRESS_PERIOD seconds) and once at the end. Returns (summed loss, batches)."""
    loader.batch_sampler.set_epoch(epoch)
    length = len(loader)
    total, batches = 0.0, 0
    for images, targets, indices in loader:
        total = total + step(Batch(images, targets, indices, epoch, epoch + batches / max(1, length),
                                   first_step + batches))
        batches += 1
        run.log_batch(bar, epoch, batches, length, lambda total=total, batches=batches: float(total) / batches,
                      learning_rate(optimizer))
    return float(total), batches


def learning_rate(optimizer: torch.optim.Optimizer | None) -> float | None:
    return optimizer.param_groups[0]["lr"] if optimizer is not None else None


def fit(loader, epochs: int, step: Step, run, desc: str, epoch_start: Callable | None = None,
        epoch_end: Callable | None = None, optimizer: torch.optim.Optimizer | None = None,
        stop: Callable | None = None, first_step: int = 0) -> int:
    """``epochs`` passes of :func:`train_one_epoch` over ``loader`` (a new shuffle each), ``step(batch)`` on
    every batch; ``epoch_start(epoch)`` and ``epoch_end(epoch)`` run around each pass (modes, schedules);
    the mean loss (and ``optimizer``'s learning rate at the epoch's last step) goes to the progress and
    tensorboard. ``stop(summed_loss)`` after an epoch: True ends the training there (an early stop).
    Returns the optimisation steps taken, counted from ``first_step``."""
    bar = run.progress(range(epochs), desc, what="train epoch")
    steps = first_step
    for epoch in bar:
        if epoch_start is not None:
            epoch_start(epoch)
        total, batches = train_one_epoch(loader, step, run, bar, epoch, optimizer, steps)
        steps += batches
        lr = learning_rate(optimizer)
        if epoch_end is not None:
            epoch_end(epoch)
        run.log_epoch(bar, desc, epoch, total / max(batches, 1), lr)
        if stop is not None and stop(total):
            break
    return steps


@dataclass(frozen=True)
class EvalScores:
    """A model's test accuracies (%): ``acc`` over every test image (top-1) and ``per_class``, the
    accuracy on each class's test images (the class's recall; NaN for a class without test images)."""

    acc: float
    per_class: np.ndarray

    @property
    def balanced_acc(self) -> float:
        """The mean of the per-class accuracies (balanced accuracy, Brodersen et al., 2010)."""
        return float(np.nanmean(self.per_class))

    @property
    def min_class_acc(self) -> float:
        """The accuracy of the worst class."""
        return float(np.nanmin(self.per_class))

    def columns(self) -> dict:
        """The cycles.csv columns beside test_acc."""
        return {"balanced_acc": round(self.balanced_acc, 4), "min_class_acc": round(self.min_class_acc, 4)}

    @staticmethod
    def mean(scores: Sequence["EvalScores"]) -> "EvalScores":
        """The mean of several models' scores (accuracy and every class's accuracy averaged)."""
        return EvalScores(float(np.mean([s.acc for s in scores])), np.mean([s.per_class for s in scores], axis=0))


def evaluate(model, data, batch_size, dist, workers=0) -> EvalScores:
    """Top-1 accuracy (%) of the main head on the test set, overall and per class (one pass)."""
    pairs = predict(model, data, "test", lambda out, y: torch.stack([out.logits.argmax(1), y], 1), batch_size, dist,
                    workers)
    predicted, targets = pairs[:, 0], pairs[:, 1]
    correct = predicted == targets
    classes = max(int(data.num_classes), int(targets.max()) + 1)
    totals = torch.bincount(targets, minlength=classes).double()
    hits = torch.bincount(targets[correct], minlength=classes).double()
    per_class = torch.where(totals > 0, 100.0 * hits / totals.clamp(min=1), torch.tensor(float("nan")))
    return EvalScores(100.0 * correct.float().mean().item(), per_class.numpy())


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two label vectors (Cohen, 1960): (p_o - p_e) / (1 - p_e), p_o the observed
    agreement, p_e the agreement expected from the two label distributions; identical vectors give
    1 (also when both hold one class only, where p_e = 1)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("cohen_kappa needs two label vectors of one non-zero length")
    observed = float(np.mean(a == b))
    size = int(max(a.max(), b.max())) + 1
    expected = float(np.dot(np.bincount(a, minlength=size), np.bincount(b, minlength=size))) / a.size ** 2
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


STOP_SET_SIZE = 2000  # images of the stop set (drawn once per trial from the images unlabeled at its start)


def stop_set(pool: np.ndarray, seed: int, size: int = STOP_SET_SIZE) -> np.ndarray:
    """The stop set of stabilising predictions (Bloodgood & Vijay-Shanker, 2009): ``size`` of ``pool``
    (all of it when smaller), drawn from a generator of its own seeded with ``seed`` (no global RNG
    is touched, so a run's queries stay as they were), sorted."""
    rng = np.random.default_rng([seed, 104_729])
    return np.sort(rng.choice(np.asarray(pool), min(size, len(pool)), replace=False))


def stop_predictions(model, data, indices: np.ndarray, batch_size: int, dist, workers: int = 0) -> torch.Tensor:
    """The model's predicted classes on the stop set ``indices`` (plain view, eval mode). The pass leaves the
    global torch RNG as it found it (a data loader draws its base seed from it), so measuring the stopping
    signal changes no later augmentation, dropout mask or query."""
    with torch.random.fork_rng(devices=[]):
        return predict(model, data, indices, lambda out, _y: out.logits.argmax(1), batch_size, dist, workers,
                       desc="stop set")


def softmax_probs(out, _targets):
    return torch.softmax(out.logits.float(), dim=1)
