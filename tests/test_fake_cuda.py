"""Self-tests of the emulated CUDA (tests/fake_cuda.py): the cases it answers as CUDA does, and planted device bugs
that it must catch at their own line."""

import copy
import io
import traceback

import numpy as np
import pytest
import torch
from fake_cuda import FakeCuda
from torch import nn

pytestmark = [pytest.mark.fake_cuda, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def cuda():
    with FakeCuda() as mode:
        yield mode


def raised_at(exc_info, marker: str) -> bool:
    """Whether the exception's innermost frame in this file is the line carrying ``marker``."""
    frames = [f for f in traceback.extract_tb(exc_info.value.__traceback__) if f.filename == __file__]
    return bool(frames) and marker in (frames[-1].line or "")


# ----------------------------------------------------------------------------- behaves as CUDA

def test_factories_and_moves(cuda):
    x = torch.zeros(3, device="cuda")
    assert x.device == torch.device("cuda", 0) and x.is_cuda and not x.is_cpu
    host = torch.ones(3)
    moved = host.to("cuda")
    assert moved.is_cuda and not host.is_cuda and moved is not host  # the source stays on the host
    assert torch.ones(2, device="cpu").device.type == "cpu"
    assert host.cuda().get_device() == 0 and moved.cpu().device.type == "cpu"


def test_results_of_cuda_inputs_are_cuda(cuda):
    x = torch.randn(4, 3, device="cuda")
    assert all(t.is_cuda for t in (x[0], x.t(), x.sum(), x * 2, torch.zeros_like(x), x.new_ones(2), x.detach(),
                                   x.float(), x.to(torch.float64), copy.deepcopy(x)))
    assert torch.ones(2).sum().device.type == "cpu"


def test_module_to_moves_parameters_buffers_gradients_and_optimizer_state(cuda):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to("cuda")
    assert all(p.is_cuda for p in model.parameters()) and all(b.is_cuda for b in model.buffers())
    for optimizer in (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.optim.Adam(model.parameters())):
        model(torch.randn(5, 3, device="cuda")).sum().backward()
        optimizer.step()
        assert all(p.grad.is_cuda for p in model.parameters())
        assert all(v.is_cuda for state in optimizer.state.values() for v in state.values() if v.dim() > 0)
    assert all(v.is_cuda for v in model.state_dict().values())


def test_cpu_module_meets_cuda_input(cuda):
    with pytest.raises(RuntimeError, match="same device"):
        nn.Linear(3, 2)(torch.randn(2, 3, device="cuda"))


def test_mixing_devices_raises_but_cpu_scalars_mix(cuda):
    x = torch.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="same device"):
        x + torch.ones(3)
    with pytest.raises(RuntimeError, match="same device"):
        torch.cat([x, torch.ones(3)])
    assert (x * torch.tensor(2.0)).is_cuda  # a 0-d CPU tensor is a scalar to CUDA kernels


def test_indexing_by_device(cuda):
    x = torch.arange(6.0, device="cuda")
    assert x[torch.tensor([1, 2])].is_cuda  # CPU indices into a CUDA tensor: fine
    host = torch.arange(6.0)
    with pytest.raises(RuntimeError, match="indices should be either on cpu"):
        host[torch.tensor([1, 2], device="cuda")]
    with pytest.raises(RuntimeError, match="indices should be either on cpu"):
        host[torch.tensor([1], device="cuda")] = 0.0
    x[torch.tensor([0])] = torch.tensor([5.0])  # a CPU value written into a CUDA tensor: a copy
    assert x.is_cuda


def test_numpy_of_cuda_raises(cuda):
    x = torch.ones(2, device="cuda")
    with pytest.raises(TypeError, match="can't convert cuda"):
        x.numpy()
    with pytest.raises(TypeError, match="can't convert cuda"):
        np.asarray(x)
    assert x.cpu().numpy().tolist() == [1.0, 1.0]


def test_generators_by_device(cuda):
    g = torch.Generator(device="cuda").manual_seed(0)
    assert g.device.type == "cuda" and isinstance(g, torch.Generator)
    assert torch.randn(3, device="cuda", generator=g).is_cuda
    with pytest.raises(RuntimeError, match="Expected a 'cuda' device type for generator but found 'cpu'"):
        torch.randn(3, device="cuda", generator=torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="Expected a 'cpu' device type for generator but found 'cuda'"):
        torch.randperm(5, generator=g)


def test_torch_cuda_answers_as_one_gpu(cuda):
    assert torch.cuda.is_available() and torch.cuda.device_count() == 1 and torch.cuda.current_device() == 0
    torch.cuda.set_device(0)
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.cuda.set_device(1)
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.ones(2).to("cuda:1")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.zeros(1000, device="cuda")
    assert torch.cuda.max_memory_allocated() >= 4000


def test_rng_states_per_device():
    with FakeCuda(device_count=2):
        states = torch.cuda.get_rng_state_all()
        assert len(states) == 2 and not torch.equal(states[0], states[1])
        torch.cuda.set_rng_state(states[0], 1)
        assert torch.equal(torch.cuda.get_rng_state(1), states[0])
    with FakeCuda(device_count=1), pytest.raises(IndexError):
        torch.cuda.set_rng_state_all(states)  # two GPUs' states on a one-GPU machine


def test_autocast_cuda_runs_as_cpu_autocast(cuda):
    layer = nn.Linear(4, 4).cuda()
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cuda", dtype=dtype):
            assert layer(torch.ones(2, 4, device="cuda")).dtype == dtype
    assert layer(torch.ones(2, 4, device="cuda")).dtype == torch.float32


def test_grad_scaler_cuda_is_enabled_and_refuses_two_steps(cuda):
    layer = nn.Linear(2, 1).cuda()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cuda")
    assert scaler.is_enabled()
    scaler.scale(layer(torch.ones(3, 2, device="cuda")).sum()).backward()
    scaler.step(optimizer)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called since the last update"):
        scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() > 0


def test_load_follows_map_location(cuda):
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2, device="cuda")}, buffer)
    buffer.seek(0)
    assert not torch.load(buffer, map_location="cpu")["w"].is_cuda
    buffer.seek(0)
    assert torch.load(buffer, map_location="cuda:0")["w"].is_cuda
    model = nn.Linear(2, 2).cuda()
    model.load_state_dict(nn.Linear(2, 2).state_dict())  # CPU values copied into CUDA parameters
    assert model.weight.is_cuda


def test_pinned_loader_batches(cuda):
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=4, pin_memory=True)
    batch = next(iter(loader))[0]
    assert batch.is_pinned() and not batch.is_cuda
    before = cuda.sync_count()
    assert batch.to("cuda", non_blocking=True).is_cuda
    assert cuda.sync_count() == before  # pinned + non_blocking: an asynchronous copy


def test_sync_counting_by_line(cuda):
    x = torch.arange(6.0, device="cuda")
    x.sum().item()  # SYNC-ITEM
    x.tolist()  # SYNC-TOLIST
    x.cpu()  # SYNC-HOST
    torch.ones(3).to("cuda")  # SYNC-H2D
    x[x > 2]  # SYNC-SHAPE
    f"{x.sum():.2f}"  # SYNC-FORMAT
    x * 2  # (no sync)
    source = open(__file__).read().splitlines()

    def line(marker):
        return next(i for i, text in enumerate(source, 1) if text.rstrip().endswith(marker))

    where = {(line_no, kind) for (path, line_no, kind) in cuda.syncs if path == "tests/test_fake_cuda.py"}
    assert where == {(line("# SYNC-ITEM"), "item"), (line("# SYNC-TOLIST"), "tolist"),
                     (line("# SYNC-HOST"), "to_host"), (line("# SYNC-H2D"), "blocking_h2d"),
                     (line("# SYNC-SHAPE"), "shape"), (line("# SYNC-FORMAT"), "item")}
    assert cuda.sync_count() == 6 and "test_fake_cuda.py" in cuda.sync_report()


def test_patches_are_undone():
    generator, autocast = torch.Generator, torch.autocast
    with FakeCuda():
        assert torch.Generator is not generator
    assert torch.Generator is generator and torch.autocast is autocast
    assert torch.ones(2).device.type == "cpu"


# ----------------------------------------------------------------------------- planted bugs, caught at their line

def scores_then_numpy(model, x):
    scores = model(x).softmax(1).max(1).values
    return scores.detach().numpy()  # BUG-NUMPY


def mask_from_host(x):
    keep = torch.rand(len(x)) < 0.5
    return torch.where(keep[:, None], x, torch.zeros_like(x))  # BUG-MIX


def pick_from_host_pool(pool_scores, model_scores):
    best = model_scores.topk(2).indices
    return pool_scores[best]  # BUG-INDEX


def shuffle_on_device(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, device="cuda", generator=generator)  # BUG-GENERATOR


def two_steps_one_update(layer, scaler, optimizer):
    for _ in range(2):
        scaler.scale(layer(torch.ones(2, 2, device="cuda")).sum()).backward()
        scaler.step(optimizer)  # BUG-SCALER
    scaler.update()


@pytest.mark.parametrize("bug", ["numpy", "mix", "index", "generator", "scaler"])
def test_planted_bug_is_caught_at_its_line(cuda, bug):
    layer = nn.Linear(2, 2).cuda()
    x = torch.randn(4, 2, device="cuda")
    calls = {"numpy": lambda: scores_then_numpy(layer, x), "mix": lambda: mask_from_host(x),
             "index": lambda: pick_from_host_pool(torch.arange(4.0), x[:, 0]),
             "generator": lambda: shuffle_on_device(4, 0),
             "scaler": lambda: two_steps_one_update(layer, torch.amp.GradScaler("cuda"),
                                                    torch.optim.SGD(layer.parameters(), lr=0.1))}
    with pytest.raises((RuntimeError, TypeError)) as exc_info:
        calls[bug]()
    assert raised_at(exc_info, f"# BUG-{bug.upper()}")


def test_planted_bugs_pass_on_the_cpu():
    """The same functions run without the emulation (so the emulation, not the code, raises above) ..."""
    layer = nn.Linear(2, 2)
    x = torch.randn(4, 2)
    scores_then_numpy(layer, x)
    mask_from_host(x)
    pick_from_host_pool(torch.arange(4.0), x[:, 0])
    torch.randperm(4, generator=torch.Generator().manual_seed(0))
