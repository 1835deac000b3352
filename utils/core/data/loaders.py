"""Data loaders over dataset indices: seeded samplers, fixed batch lists, endless and augmented batches."""

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from utils.core.data.datasets import ImageData


class IndexSampler(Sampler):
    """Yields the given dataset indices (not positions), shuffled per epoch from ``seed`` and
    ``set_epoch`` when asked, and sharded over ``world`` ranks (padded to equal length when
    ``pad``, as DistributedSampler)."""

    def __init__(self, indices, shuffle=False, seed=0, rank=0, world=1, pad=True):
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.shuffle, self.seed, self.rank, self.world, self.pad = shuffle, seed, rank, world, pad
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _order(self):
        order = self.indices
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = order[torch.randperm(len(order), generator=generator)]
        if self.world > 1 and self.pad and len(order) % self.world:
            extra = self.world - len(order) % self.world
            order = torch.cat([order, order[:extra]])
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self):
        return len(self._order())


class BatchListSampler(Sampler):
    """Yields the batches ``make_batches(epoch)`` returns (lists of dataset indices), every
    ``world``-th one on each rank, the list padded with its first batches to a multiple of
    ``world`` (as DistributedSampler pads indices) so every rank takes the same number of steps.
    ``make_batches`` must give every rank the same list (draw from an RNG seeded by the epoch)."""

    def __init__(self, make_batches, rank=0, world=1):
        self.make_batches, self.rank, self.world = make_batches, rank, world
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _mine(self) -> list:
        batches = self.make_batches(self.epoch)
        if self.world > 1 and len(batches) % self.world:
            batches = batches + batches[: self.world - len(batches) % self.world]
        return batches[self.rank::self.world]

    def __iter__(self):
        return iter(self._mine())

    def __len__(self):
        return len(self._mine())


def _collate(batch):
    return batch


class IndexBatches(BatchSampler):
    """``sampler``'s indices in batches of ``batch_size``; ``training`` leaves out a last batch of
    one image (a BatchNorm layer in training mode cannot normalise a single sample: the seeds
    crash there). ``set_epoch`` reaches the sampler."""

    def __init__(self, sampler: Sampler, batch_size: int, training: bool = False):
        super().__init__(sampler, batch_size, drop_last=False)
        self.training = training

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        for batch in super().__iter__():
            if len(batch) > 1 or not self.training:
                yield batch

    def __len__(self):
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (rest > 1 or (rest == 1 and not self.training))


def make_loader(dataset: Dataset, indices, batch_size: int, shuffle: bool = False, seed: int = 0, dist=None,
                workers: int = 0, pad: bool = True) -> DataLoader:
    """A DataLoader over ``indices`` of ``dataset`` yielding ``(uint8 images, labels, indices)``;
    under torch.distributed each rank reads its shard. ``shuffle`` makes it a training loader:
    reshuffled every epoch (``batch_sampler.set_epoch``), and a last batch of one image is left
    out (IndexBatches)."""
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    batches = IndexBatches(IndexSampler(indices, shuffle, seed, rank, world, pad), batch_size, training=shuffle)
    pin = bool(dist and dist.device.type == "cuda")
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers or 0, collate_fn=_collate,
                      pin_memory=pin, persistent_workers=False)


def make_batch_loader(dataset: Dataset, make_batches: Callable[[int], list], dist=None, workers: int = 0) -> DataLoader:
    """A DataLoader over the batches ``make_batches(epoch)`` returns (see BatchListSampler)."""
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    pin = bool(dist and dist.device.type == "cuda")
    return DataLoader(dataset, batch_sampler=BatchListSampler(make_batches, rank, world), num_workers=workers or 0,
                      collate_fn=_collate, pin_memory=pin)


def cycled_batches(rng: np.random.Generator, indices: np.ndarray, batches: int, size: int) -> np.ndarray:
    """``[batches, size]`` dataset indices from reshuffled passes over ``indices``, each pass a new
    permutation drawn from ``rng`` (a batch may span two passes; every batch is full)."""
    passes = max(1, -(-batches * size // len(indices)))
    return np.concatenate([rng.permutation(indices) for _ in range(passes)])[: batches * size].reshape(batches, size)


def forever(loader: DataLoader) -> Iterator:
    """Endless batches from ``loader``, a new epoch (new shuffle) each pass."""
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def augmented_batches(data: ImageData, indices: np.ndarray, batch_size: int, dist=None,
                      workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented batches ``(x, y)`` of ``indices`` on the training device, reshuffled every
    pass; the shuffle seed is drawn from numpy's global RNG when the first batch is asked for."""
    seed = np.random.randint(2**31)
    loader = make_loader(data.train, indices, batch_size, True, seed, dist, workers)
    device = dist.device if dist else torch.device("cpu")
    for images, targets, _ in forever(loader):
        yield data.train_transform(images.to(device)), targets.to(device)
