"""The global random number generators: seeding them, and their state for an exact resume."""

import random

import numpy as np
import torch

from utils.core import distributed


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
