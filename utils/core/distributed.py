"""One device path for one process, ``torchrun`` and ``python -m torch.distributed.launch``.

Under a launcher every rank trains on its shard (DistributedSampler-style) and scores its
shard of the pool; results are gathered in rank order so every rank sees the same tensors;
rank 0 selects, broadcasts the chosen indices and alone writes files.
"""

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as torch_dist

from utils.core.errors import UserError
from utils.core.precision import Precision


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    precision: Precision = field(default_factory=Precision)  # --amp, --channels-last

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def setup(device="auto", local_rank=None, amp="off", channels_last=False):
    """Read the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK; ``--local_rank`` from the
    old launcher), pick the device and start the process group (nccl on CUDA, gloo on CPU);
    ``amp``/``channels_last``: utils/core/precision.py."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank if local_rank is not None else 0))
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this machine has no CUDA device; use --device cpu or auto")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        gpus = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
        if max(per_node, local_rank + 1) > gpus:  # (ranks sharing a GPU: NCCL fails at the first collective)
            raise UserError(f"{max(per_node, local_rank + 1)} processes on this node but {gpus} visible GPU(s): "
                            f"launch at most --nproc_per_node {gpus} (one GPU per process), or use --device cpu")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    precision = Precision(amp, channels_last, dev.type)  # (refuses fp16 without CUDA, before any process group)
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world_size, local_rank, dev, precision)


def cleanup(dist):
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def barrier(dist):
    if dist is not None and dist.enabled:
        torch_dist.barrier()


def wrap(model, dist, find_unused_parameters=False):
    """DistributedDataParallel under a launcher, the model itself otherwise.

    Every rank's copy of ``model`` stays rank 0's, buffers included: DDP's own buffer sync comes
    before each forward, so after a cycle's last training step each rank would keep the BatchNorm
    statistics of its own last batch, and rank 1 would score its shard of the pool (and the test
    set) with another model than the one rank 0 reports and checkpoints (a resumed run, whose
    ranks all load rank 0's checkpoint, then queries differently). Here rank 0's buffers are
    broadcast after each training-mode forward instead; rank 0's model is what it was.

    With --amp or --channels-last the returned network runs its forward as utils/core/precision.py says
    (the weights go channels-last before DistributedDataParallel sizes its gradient buckets)."""
    dist.precision.prepare(model)
    if not dist.enabled:
        return dist.precision.wrap(model)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters,
                                  forward_sync_buffers=False)  # (buffers are still synced here, at init)
    if any(True for _ in model.buffers()):
        def sync_after_training_forward(_net, _inputs, _output):
            if model.training:  # (the same on every rank, as every DDP forward)
                broadcast_buffers(model, dist)

        net.register_forward_hook(sync_after_training_forward)
    return dist.precision.wrap(net)


@torch.no_grad()
def broadcast_buffers(module, dist):
    """Rank 0's buffers of ``module`` (BatchNorm statistics, ...), on every rank, in place."""
    if dist is None or not dist.enabled:
        return
    groups = {}
    for buffer in module.buffers():
        groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
    for buffers in groups.values():
        flat = torch.cat([b.reshape(-1) for b in buffers]).to(dist.device)
        torch_dist.broadcast(flat, src=0)
        offset = 0
        for b in buffers:  # through .data: a training forward's graph saved the buffers (BatchNorm's backward
            b.data.copy_(flat[offset:offset + b.numel()].view_as(b))  # does not read running statistics)
            offset += b.numel()


def unwrap(model):
    """The network inside ``wrap``'s DistributedDataParallel and precision wrappers."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


def gather_rows(tensor, dist):
    """Concatenate every rank's ``tensor`` (any number of rows) along dim 0, in rank order."""
    if not dist.enabled:
        return tensor
    local = tensor.to(dist.device)
    sizes = [torch.zeros(1, dtype=torch.long, device=dist.device) for _ in range(dist.world_size)]
    torch_dist.all_gather(sizes, torch.tensor([len(local)], device=dist.device))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes),) + tuple(local.shape[1:]), dtype=local.dtype, device=dist.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(dist.world_size)]
    torch_dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(tensor.device)


def broadcast_object(obj, dist):
    """Rank 0's ``obj`` (anything picklable), on every rank."""
    if dist is None or not dist.enabled:
        return obj
    payload = [obj if dist.is_main else None]
    torch_dist.broadcast_object_list(payload, src=0)
    return payload[0]


def broadcast_indices(indices, dist):
    """Rank 0's index array, on every rank."""
    return np.asarray(broadcast_object(np.asarray(indices), dist))


def shard(indices, dist):
    """This rank's contiguous share of ``indices``, all shares of equal length (the list is
    padded cyclically); ``gather_rows(...)[:len(indices)]`` restores the original order."""
    indices = np.asarray(indices)
    if not dist.enabled:
        return indices
    per_rank = -(-len(indices) // dist.world_size)
    padded = np.resize(indices, per_rank * dist.world_size)
    return padded[dist.rank * per_rank:(dist.rank + 1) * per_rank]
