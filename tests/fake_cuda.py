"""Emulated CUDA on the CPU: device bugs of the ``--device cuda`` paths, found without a GPU.

``with FakeCuda() as cuda: ...`` keeps every tensor on the CPU but tags the ones that would live on
``cuda:0``: factories given ``device="cuda"``, ``.to("cuda")``/``.cuda()`` (so ``Module.to``/``.cuda``, whose
parameters and buffers go through them), and every result of an op with a CUDA input (views, ``.grad``,
``.data``, optimiser states, deep copies). Tagged tensors report ``.device == cuda:0`` and ``.is_cuda``.
``torch.cuda`` answers as a machine with ``device_count`` GPUs (availability, ``set_device``, per-device RNG
states, memory figures, ``synchronize``), CUDA autocast runs as CPU autocast (bf16 and fp16), and
``GradScaler("cuda")`` is an enabled CPU ``GradScaler``. It raises where CUDA would:

* an op mixing a CUDA tensor with a CPU tensor that is not a 0-d scalar;
* a CPU tensor indexed (read or written) with CUDA indices;
* ``.numpy()`` (or ``np.asarray``) of a CUDA tensor;
* a random op given a ``torch.Generator`` of the other device type; ``.to("cuda:N")`` past the device count.

Host syncs are counted by (file, line, kind) of the first frame of the repository outside this module
(``cuda.syncs``, ``cuda.sync_report()``): ``item`` (also ``bool``/``int``/``float``/format of a CUDA
tensor), ``tolist``, ``to_host`` (``.cpu()``/``.to("cpu")`` of a CUDA tensor), ``blocking_h2d`` (a copy to the
device from unpinned memory or without ``non_blocking``) and ``shape`` (ops whose output size depends on
CUDA data: ``nonzero``, ``masked_select``, boolean-mask indexing, ``unique``).
:func:`training_syncs` measures them per training step of a script.

What it cannot show: kernel faults (device asserts, out-of-bounds reads), NCCL, numerics of CUDA kernels
(TF32, cuDNN algorithms, fp16 overflow of real data) and timings.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterator

import torch
from torch.overrides import TorchFunctionMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)
TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
CUDA0 = torch.device("cuda", 0)

_TB = torch._C.TensorBase
_GETTERS = {"device": _TB.__dict__["device"], "is_cuda": _TB.__dict__["is_cuda"], "is_cpu": _TB.__dict__["is_cpu"],
            "data": _TB.__dict__["data"]}
_SYNC_SCALARS = {"item", "__bool__", "__int__", "__float__", "__index__", "__format__"}
_METADATA = {"_has_compatible_shallow_copy_type", "is_same_size", "__set__"}  # ops that read no data
_SHAPE_OPS = {"nonzero", "argwhere", "masked_select", "unique", "_unique2", "unique_consecutive", "nonzero_static"}


def _tensors(value) -> Iterator[torch.Tensor]:
    """Every tensor in ``value`` (nested tuples, lists, dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _is_cuda_device(device) -> bool | None:
    """True for a CUDA device (str, int ordinal or torch.device), False for another, None for None."""
    if device is None:
        return None
    if isinstance(device, int):
        return True
    return torch.device(device).type == "cuda"


class FakeGenerator(torch._C.Generator):
    """``torch.Generator(device)``: a CPU generator that remembers the device it was asked for."""

    def __new__(cls, device="cpu"):
        generator = super().__new__(cls, "cpu")
        generator._fake_device = torch.device(device if not isinstance(device, int) else f"cuda:{device}")
        if generator._fake_device.type == "cuda" and generator._fake_device.index is None:
            generator._fake_device = CUDA0
        return generator

    def __init__(self, device="cpu"):
        pass

    @property
    def device(self) -> torch.device:
        return self._fake_device


class _Autocast(torch.amp.autocast_mode.autocast):
    """``torch.autocast("cuda", ...)`` as CPU autocast (bf16 and fp16 both run there)."""

    def __init__(self, device_type: str = "cuda", *args, **kwargs):
        super().__init__("cpu" if device_type == "cuda" else device_type, *args, **kwargs)


class _GradScaler(torch.amp.GradScaler):
    """``GradScaler("cuda")`` as an enabled CPU scaler."""

    def __init__(self, device: str = "cuda", *args, **kwargs):
        super().__init__("cpu" if device == "cuda" else device, *args, **kwargs)


class _Stream:
    """The current stream: never capturing a CUDA graph."""

    def is_capturing(self) -> bool:
        return False

    def synchronize(self) -> None:
        pass


class FakeCuda(TorchFunctionMode):
    """The emulation (see the module docstring). ``device_count``: the GPUs ``torch.cuda`` reports."""

    def __init__(self, device_count: int = 1):
        super().__init__()
        self.device_count = device_count
        self.current = 0
        self.syncs: Counter = Counter()
        self._cuda: dict[int, weakref.ref] = {}
        self._pinned: dict[int, weakref.ref] = {}
        self._rng = [torch.zeros(16, dtype=torch.uint8) + i for i in range(device_count)]
        self._peak = 0
        self._saved: list[tuple[object, str, object]] = []

    # ------------------------------------------------------------------ tags
    @staticmethod
    def _has(table: dict, t: torch.Tensor) -> bool:
        ref = table.get(id(t))
        return ref is not None and ref() is t

    @staticmethod
    def _set(table: dict, t: torch.Tensor, value: bool) -> None:
        key = id(t)
        if value:
            table[key] = weakref.ref(t, lambda _r, table=table, key=key: table.pop(key, None))
        else:
            table.pop(key, None)

    def is_cuda(self, t: torch.Tensor) -> bool:
        """Whether ``t`` lives on the emulated GPU."""
        return self._has(self._cuda, t)

    def _tag(self, value, cuda: bool) -> None:
        for t in _tensors(value):
            self._set(self._cuda, t, cuda)
            if cuda:
                self._peak = max(self._peak, t.numel() * t.element_size())

    # ------------------------------------------------------------------ syncs
    def _sync(self, kind: str) -> None:
        frame = sys._getframe(2)
        fallback = None
        while frame is not None:
            path = os.path.abspath(frame.f_code.co_filename)
            if path != HERE and not path.startswith(TORCH_DIR):
                fallback = fallback or (path, frame.f_lineno)
                if path.startswith(ROOT):
                    break
            frame = frame.f_back
        path, line = (os.path.abspath(frame.f_code.co_filename), frame.f_lineno) if frame is not None else \
            (fallback or ("?", 0))
        self.syncs[(os.path.relpath(path, ROOT) if path.startswith(ROOT) else path, line, kind)] += 1

    def sync_count(self) -> int:
        return sum(self.syncs.values())

    def sync_report(self, top: int = 20) -> str:
        """The counted syncs, most frequent first: ``count  file:line  kind``."""
        return "\n".join(f"{n:8d}  {path}:{line}  {kind}" for (path, line, kind), n in self.syncs.most_common(top))

    # ------------------------------------------------------------------ the mode
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = getattr(func, "__self__", None)
        name = getattr(func, "__name__", "")
        if name == "__get__" and owner is not None:
            if owner is _GETTERS["device"]:
                return CUDA0 if self.is_cuda(args[0]) else func(*args)
            if owner is _GETTERS["is_cuda"]:
                return self.is_cuda(args[0])
            if owner is _GETTERS["is_cpu"]:
                return not self.is_cuda(args[0])
        if name == "__set__" and owner is _GETTERS["data"]:  # p.data = t: p moves to t's device
            func(*args)
            self._tag(args[0], self.is_cuda(args[1]))
            return None
        handler = getattr(self, "_op_" + name, None) if name in self._HANDLED else None
        if handler is not None:
            return handler(func, args, kwargs)
        return self._generic(func, name, args, kwargs)

    _HANDLED = {"to", "cuda", "cpu", "numpy", "__array__", "tolist", "pin_memory", "is_pinned", "copy_",
                "__getitem__", "__setitem__", "get_device"}

    def _generic(self, func, name, args, kwargs):
        target = _is_cuda_device(kwargs.get("device"))
        if target:
            index = torch.device(kwargs["device"]).index if not isinstance(kwargs["device"], int) else kwargs["device"]
            self._check_ordinal(index)
            kwargs = {**kwargs, "device": "cpu"}
        inputs = list(_tensors((args, kwargs)))
        cuda_inputs = [t for t in inputs if self.is_cuda(t)]
        if cuda_inputs and target is None and name not in _METADATA:
            cpu = next((t for t in inputs if not self.is_cuda(t) and t.dim() > 0), None)
            if cpu is not None:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                   f"cuda:0 and cpu! ({name}: a CPU tensor of shape {tuple(cpu.shape)})")
        on_cuda = target if target is not None else bool(cuda_inputs)
        generator = kwargs.get("generator")
        if isinstance(generator, torch.Generator):
            kind = generator.device.type
            if kind != ("cuda" if on_cuda else "cpu"):
                raise RuntimeError(f"Expected a '{'cuda' if on_cuda else 'cpu'}' device type for generator but "
                                   f"found '{kind}'")
        if cuda_inputs and name in _SYNC_SCALARS:
            self._sync("item")
        if cuda_inputs and name in _SHAPE_OPS:
            self._sync("shape")
        if target and name in ("tensor", "as_tensor", "asarray"):  # Python or host data copied to the device
            self._sync("blocking_h2d")
        out = func(*args, **kwargs)
        if on_cuda:
            ids = {id(t) for t in inputs}
            self._tag([t for t in _tensors(out) if id(t) not in ids], True)
        return out

    def _check_ordinal(self, index: int | None) -> None:
        if index is not None and not 0 <= index < self.device_count:
            raise RuntimeError("CUDA error: invalid device ordinal")

    # ------------------------------------------------------------------ moves between devices
    def _move(self, t: torch.Tensor, cuda: bool, non_blocking: bool, convert: Callable[[], torch.Tensor]):
        source = self.is_cuda(t)
        out = convert()
        if source != cuda:
            if out is t:
                out = t.clone()
            if cuda and not (non_blocking and self._has(self._pinned, t)):
                self._sync("blocking_h2d")
            elif not cuda:
                self._sync("to_host")
        self._tag(out, cuda) if out is not t else None
        return out

    def _op_to(self, func, args, kwargs):
        t, rest = args[0], args[1:]
        if rest and isinstance(rest[0], torch.Tensor):  # .to(other): other's device and dtype
            other = rest[0]
            device, dtype, non_blocking = (CUDA0 if self.is_cuda(other) else other.device), other.dtype, \
                kwargs.get("non_blocking", rest[1] if len(rest) > 1 else False)
            memory_format, copy = torch.preserve_format, kwargs.get("copy", False)
        else:
            copy = kwargs.get("copy", False)
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(
                *rest, **{k: v for k, v in kwargs.items() if k != "copy"})
        if device is not None and device.type == "cuda":
            self._check_ordinal(device.index)
        cuda = self.is_cuda(t) if device is None else device.type == "cuda"
        options = {"dtype": dtype or t.dtype, "copy": copy,
                   "memory_format": memory_format or torch.preserve_format}
        return self._move(t, cuda, bool(non_blocking), lambda: func(t, **options))

    def _op_cuda(self, func, args, kwargs):
        device = args[1] if len(args) > 1 else kwargs.get("device")
        if device is not None:
            self._check_ordinal(device if isinstance(device, int) else torch.device(device).index)
        non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
        return self._move(args[0], True, bool(non_blocking), lambda: args[0])

    def _op_cpu(self, func, args, kwargs):
        return self._move(args[0], False, False, lambda: args[0])

    def _op_copy_(self, func, args, kwargs):
        dst, src = args[0], args[1]
        non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
        if self.is_cuda(dst) and not self.is_cuda(src) and src.dim() > 0 and \
                not (non_blocking and self._has(self._pinned, src)):
            self._sync("blocking_h2d")
        elif not self.is_cuda(dst) and self.is_cuda(src):
            self._sync("to_host")
        return func(*args, **kwargs)

    def _op_numpy(self, func, args, kwargs):
        if self.is_cuda(args[0]):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        return func(*args, **kwargs)

    _op___array__ = _op_numpy

    def _op_tolist(self, func, args, kwargs):
        if self.is_cuda(args[0]):
            self._sync("tolist")
        return func(*args, **kwargs)

    def _op_get_device(self, func, args, kwargs):
        return 0 if self.is_cuda(args[0]) else func(*args, **kwargs)

    def _op_pin_memory(self, func, args, kwargs):
        if self.is_cuda(args[0]):
            raise RuntimeError("cannot pin 'torch.cuda.FloatTensor' only dense CPU tensors can be pinned")
        out = args[0].clone()
        self._set(self._pinned, out, True)
        return out

    def _op_is_pinned(self, func, args, kwargs):
        return self._has(self._pinned, args[0])

    # ------------------------------------------------------------------ indexing
    def _check_index(self, t: torch.Tensor, index) -> None:
        cuda_index = [i for i in _tensors(index) if self.is_cuda(i)]
        if cuda_index and not self.is_cuda(t):
            raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        if self.is_cuda(t) and any(i.dtype == torch.bool for i in _tensors(index)):
            self._sync("shape")

    def _op___getitem__(self, func, args, kwargs):
        t, index = args[0], args[1]
        self._check_index(t, index)
        out = func(*args, **kwargs)
        if self.is_cuda(t):
            self._tag(out, True)
        return out

    def _op___setitem__(self, func, args, kwargs):
        t, index, value = args[0], args[1], args[2]
        self._check_index(t, index)
        if isinstance(value, torch.Tensor) and self.is_cuda(value) and not self.is_cuda(t) and value.dim() > 0:
            raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                               "cpu and cuda:0! (__setitem__ of a CPU tensor with a CUDA value)")
        return func(*args, **kwargs)

    # ------------------------------------------------------------------ torch.cuda, autocast, GradScaler
    def _device_index(self, device) -> int:
        if device is None:
            return self.current
        index = device if isinstance(device, int) else torch.device(device).index
        return self.current if index is None else index

    def _get_rng_state(self, device="cuda") -> torch.Tensor:
        return self._rng[self._device_index(device)].clone()  # (IndexError past the device count, as CUDA)

    def _set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        self._rng[self._device_index(device)] = state.clone()

    def _set_device(self, device) -> None:
        index = self._device_index(device)
        self._check_ordinal(index)
        self.current = index

    def _patches(self) -> list[tuple[object, str, object]]:
        cuda = torch.cuda
        peak = lambda *_a, **_k: self._peak  # noqa: E731
        return [
            (cuda, "is_available", lambda: True), (cuda, "device_count", lambda: self.device_count),
            (cuda, "set_device", self._set_device), (cuda, "current_device", lambda: self.current),
            (cuda, "synchronize", lambda *_a, **_k: None), (cuda, "empty_cache", lambda: None),
            (cuda, "get_rng_state", self._get_rng_state), (cuda, "set_rng_state", self._set_rng_state),
            (cuda, "get_rng_state_all", lambda: [s.clone() for s in self._rng]),
            (cuda, "set_rng_state_all", lambda states: [self._set_rng_state(s, i) for i, s in enumerate(states)]),
            (cuda, "manual_seed", lambda seed: None), (cuda, "manual_seed_all", lambda seed: None),
            (cuda, "max_memory_allocated", peak), (cuda, "memory_allocated", peak),
            (cuda, "max_memory_reserved", peak), (cuda, "memory_reserved", peak),
            (cuda, "reset_peak_memory_stats", lambda *_a, **_k: setattr(self, "_peak", 0)),
            (cuda, "get_device_name", lambda *_a, **_k: "emulated CUDA device"),
            (cuda, "get_device_capability", lambda *_a, **_k: (9, 0)), (cuda, "is_bf16_supported", lambda *_a: True),
            (torch.accelerator, "is_available", lambda: True),
            (torch.accelerator, "current_accelerator", lambda *_a, **_k: torch.device("cuda")),
            (torch.accelerator, "current_stream", lambda *_a, **_k: _Stream()),
            (cuda, "current_stream", lambda *_a, **_k: _Stream()), (cuda, "is_current_stream_capturing", lambda: False),
            (torch, "Generator", FakeGenerator),
            (torch, "autocast", _Autocast), (torch.amp, "autocast", _Autocast),
            (torch.amp, "GradScaler", _GradScaler), (torch, "load", self._load),
            (torch.nn.Parameter, "__new__", self._parameter),
        ]

    def _parameter(self, cls, data=None, requires_grad=True):
        """``nn.Parameter(t)`` (also inside deep copies of modules): on ``t``'s device."""
        out = self._saved_parameter(cls, data, requires_grad)
        if data is not None and self.is_cuda(data):
            self._tag(out, True)
        return out

    def _load(self, *args, map_location=None, **kwargs):
        """``torch.load``: tensors on the CPU, tagged CUDA when ``map_location`` names a CUDA device (files
        saved from tagged tensors load untagged: give a ``map_location``)."""
        to_cuda = map_location is not None and not callable(map_location) and not isinstance(map_location, dict) \
            and _is_cuda_device(map_location)
        out = self._saved_load(*args, map_location="cpu" if to_cuda else map_location, **kwargs)
        if to_cuda:
            self._tag(out, True)
        return out

    def __enter__(self):
        self._saved_load = torch.load
        self._saved_parameter = torch.nn.Parameter.__new__
        for owner, name, value in self._patches():
            self._saved.append((owner, name, vars(owner)[name] if name in vars(owner) else getattr(owner, name)))
            setattr(owner, name, value)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for owner, name, value in reversed(self._saved):
                setattr(owner, name, value)
            self._saved.clear()


def training_syncs(run: Callable[[], object], device_count: int = 1) -> tuple[float, int, FakeCuda]:
    """Host syncs per training step of ``run()`` (a script's ``main(argv)`` with ``--device cuda``) under
    :class:`FakeCuda`: the syncs counted inside the scripts' ``train_seconds`` timers (``Run.timer``)
    divided by the ``Precision.minimize`` calls there (one per task step). Returns (syncs per step, steps,
    the mode, whose ``syncs`` then hold only the training windows' syncs)."""
    from contextlib import contextmanager

    from utils.core import loop, precision

    state = {"inside": 0, "steps": 0, "syncs": Counter()}
    timer, minimize = loop.Run.timer, precision.Precision.minimize

    @contextmanager
    def timing(self, times, key):
        if key != "train_seconds":
            with timer(self, times, key):
                yield
            return
        before = Counter(mode.syncs)
        state["inside"] += 1
        try:
            with timer(self, times, key):
                yield
        finally:
            state["inside"] -= 1
            state["syncs"] += mode.syncs - before

    def counting_minimize(self, *args, **kwargs):
        state["steps"] += state["inside"] > 0
        return minimize(self, *args, **kwargs)

    loop.Run.timer, precision.Precision.minimize = timing, counting_minimize
    mode = FakeCuda(device_count)
    try:
        with mode:
            run()
    finally:
        loop.Run.timer, precision.Precision.minimize = timer, minimize
    mode.syncs = state["syncs"]
    steps = state["steps"]
    return (mode.sync_count() / steps if steps else float("nan")), steps, mode
