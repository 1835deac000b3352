"""Numeric precision and memory layout of one process: ``--amp {off,bf16,fp16}`` and ``--channels-last``.

``off`` (the default) keeps the papers' float32 everywhere. With ``bf16`` or ``fp16`` every network
forward of training and pool scoring runs under ``torch.autocast`` (convolutions and matrix products in
the low precision) and the network's outputs come back as float32, so every loss and score computed
from them (cross-entropy, softmax/entropy scores, NT-Xent, the GMM's inputs, BatchBALD's joint
entropies) is float32. ``fp16`` needs CUDA and scales the loss (``torch.amp.GradScaler``) so that small
gradients do not underflow; ``bf16`` has float32's exponent range, needs no scaling, and runs on the CPU
too. ``--channels-last`` stores the convolutional models' weights and inputs NHWC (faster convolutions
on tensor cores and with oneDNN); it changes no result beyond float rounding.

A training loop uses it through ``distributed.wrap`` (the wrapped network runs its forward this way)
and ``minimize`` (or ``backward``/``step``/``update`` when one backward feeds several optimizers);
``utils.core.train.predict`` scores the pool the same way.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from utils.core.errors import UserError

AMP_MODES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def float32(value):
    """``value`` (a tensor, or a tuple/NamedTuple/list/dict of them, nested) with every floating tensor as
    float32; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(float32(v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(float32(v) for v in value)
    if isinstance(value, dict):
        return {k: float32(v) for k, v in value.items()}
    return value


@dataclass
class Precision:
    """``amp`` ('off', 'bf16' or 'fp16') and ``channels_last`` on ``device_type`` ('cpu' or 'cuda')."""

    amp: str = "off"
    channels_last: bool = False
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.amp not in AMP_MODES:
            raise UserError(f"--amp {self.amp}: choose one of {', '.join(AMP_MODES)}")
        if self.amp == "fp16" and self.device_type != "cuda":
            raise UserError("--amp fp16 needs a CUDA device (float16 with loss scaling); on the CPU use --amp bf16")
        if self.amp == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler("cuda")

    def own_scaler(self) -> Precision:
        """This precision with a loss scaler of its own (under fp16; the same object otherwise): for networks
        trained by their own backward passes, several optimizer steps per task step, each followed by
        ``update`` (a GradScaler steps each optimizer at most once between two updates)."""
        if self.scaler is None:
            return self
        return replace(self, scaler=torch.amp.GradScaler(self.device_type))

    @property
    def active(self) -> bool:
        """Whether forwards run any differently from plain float32, contiguous NCHW."""
        return self.amp != "off" or self.channels_last

    def autocast(self):
        """The context a network forward runs in (autocast to bf16/fp16, or nothing)."""
        dtype = AMP_MODES[self.amp]
        return torch.autocast(self.device_type, dtype=dtype) if dtype is not None else nullcontext()

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` with its 4-d weights channels-last (in place) when ``channels_last``."""
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and \
            isinstance(x, torch.Tensor) and x.dim() == 4 else x

    def forward(self, net, *inputs, **kwargs):
        """``net(*inputs)`` under autocast, channels-last inputs, outputs as float32."""
        with self.autocast():
            out = net(*(self.inputs(x) for x in inputs), **kwargs)
        return float32(out) if self.amp != "off" else out

    def wrap(self, net: nn.Module) -> nn.Module:
        """``net`` whose calls go through :meth:`forward` (``net`` itself when nothing is active)."""
        if not self.active:
            return net
        self.prepare(net)
        return PrecisionModule(net, self)

    # ------------------------------------------------------------------ backward
    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """The true gradients of ``optimizer``'s parameters (before clipping them), under fp16."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under fp16 skipped when the scaled gradients overflowed."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """The loss scale for the next iteration (after every optimizer of this one has stepped)."""
        if self.scaler is not None:
            self.scaler.update()

    def minimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip_value: float | None = None,
                 clip_norm: float | None = None, before_update=None) -> None:
        """backward, optional clipping (element-wise to +-``clip_value``, or the total norm to ``clip_norm``),
        ``optimizer.step()``: the plain sequence, with loss scaling under fp16. ``before_update()`` runs the
        steps of other optimizers this backward fed (a strategy hook's: they use ``step``, never ``update``)."""
        self.backward(loss)
        if clip_value is not None or clip_norm is not None:
            self.unscale(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if clip_value is not None:
                nn.utils.clip_grad_value_(params, clip_value)
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(params, clip_norm)
        self.step(optimizer)
        if before_update is not None:
            before_update()
        self.update()


class PrecisionModule(nn.Module):
    """A network whose forward runs as ``precision.forward`` says; ``module`` is the network (as
    DistributedDataParallel's, so ``distributed.unwrap`` finds it)."""

    def __init__(self, module: nn.Module, precision: Precision):
        super().__init__()
        self.module = module
        self.precision = precision

    def forward(self, *inputs, **kwargs):
        return self.precision.forward(self.module, *inputs, **kwargs)
