"""Training and inference helpers shared by the entry scripts."""

import random

import numpy as np
import torch

from utils import distributed
from utils.data import make_loader


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state():
    """Every global RNG state, for exact resume."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]  # loadable with weights_only
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def predict(model, data, indices, fn, batch_size, dist, workers=0):
    """``fn(model_output, targets)`` for every sample of ``indices`` of the training set (the
    test set when ``indices`` is ``'test'``), in the order of ``indices``, on the CPU.

    Runs in eval mode on the plain view. Under torch.distributed every rank scores a
    contiguous shard and the shards are gathered.
    """
    dataset = data.train
    if isinstance(indices, str) and indices == "test":
        dataset, indices = data.test, data.test_idx
    if len(indices) == 0:
        raise ValueError("predict() needs at least one index")
    loader = make_loader(dataset, distributed.shard(indices, dist), batch_size, workers=workers)
    was_training = model.training
    model.eval()
    outputs = []
    for images, targets, _ in loader:
        images = data.eval_transform(images.to(dist.device, non_blocking=True))
        outputs.append(fn(model(images), targets.to(dist.device)).cpu())
    model.train(was_training)
    return distributed.gather_rows(torch.cat(outputs), dist)[: len(indices)]


def evaluate(model, data, batch_size, dist, workers=0):
    """Top-1 accuracy (%) of the main head on the test set."""
    correct = predict(model, data, "test", lambda out, y: out.logits.argmax(1) == y, batch_size, dist, workers)
    return 100.0 * correct.float().mean().item()


def softmax_probs(out, _targets):
    return torch.softmax(out.logits.float(), dim=1)
