"""The CUDA-only faults of issue 25, checked on the CPU: VAAL's two steps under a loss scaler, more ranks than
GPUs, per-rank device RNG states in checkpoints, the adversarial attacks in float32 under --amp, the centre
gradients' all-reduce before unscaling, and --jobs handing out the visible GPUs."""

import os
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_context
from fake_cuda import FakeCuda

from utils.core.distributed import Dist
from utils.core.errors import UserError
from utils.core.precision import Precision

pytestmark = pytest.mark.usefixtures("one_thread")


def scaled(amp="bf16"):
    """A CPU precision with an enabled loss scaler (what fp16 on CUDA does, here with bf16 autocast)."""
    return Precision(amp, device_type="cpu", scaler=torch.amp.GradScaler("cpu"))


def test_vaal_steps_twice_per_task_step_under_a_loss_scaler():
    from utils.samplers.hooks import HookSettings, VAALHook

    precision = scaled()
    settings = HookSettings(lr=0.1, momentum=0.9, weight_decay=0.0, grad_clip=None, in_channels=1, image_size=8,
                            device=torch.device("cpu"), precision=precision, params={"VAE_WIDTH": 4})

    def stream(indices):
        generator = torch.Generator().manual_seed(len(indices))
        while True:
            yield torch.rand(4, 1, 8, 8, generator=generator), torch.zeros(4, dtype=torch.long)

    hook = VAALHook(None, np.arange(8), np.arange(8, 20), stream, settings)
    task = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    before = [p.detach().clone() for p in hook.vae.parameters()]
    for _ in range(2):  # two task steps, each with VAE_STEPS VAE steps and a discriminator step
        optimizer.zero_grad()
        precision.minimize(task(torch.ones(3, 2)).sum(), optimizer, before_update=lambda: hook.step(None, 0))
    assert hook.precision.scaler is not precision.scaler
    assert any(not torch.equal(a, b) for a, b in zip(before, hook.vae.parameters()))  # the VAE stepped


def test_more_processes_than_gpus_is_refused_in_one_line(monkeypatch):
    from utils.core import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with FakeCuda(device_count=1), pytest.raises(UserError) as exc:
        distributed.setup("cuda")
    message = str(exc.value)
    assert "2 processes on this node but 1 visible GPU(s)" in message and "\n" not in message
    with FakeCuda(device_count=2):
        monkeypatch.setattr(distributed.torch_dist, "init_process_group", lambda backend: None)
        assert distributed.setup("cuda").device == torch.device("cuda", 1)


def test_checkpoints_keep_each_ranks_own_device_rng_state():
    from utils.core.rng import rng_state, set_rng_state

    with FakeCuda(device_count=2):
        torch.cuda.set_device(0)
        state = rng_state(Dist(device=torch.device("cuda", 0)))
        assert state["cuda"].shape[0] == 1  # one rank: its own device only, not every visible GPU
        two_gpus = torch.cuda.get_rng_state_all()  # what checkpoints held before: every visible GPU's state
    with FakeCuda(device_count=1):  # resumed on a machine with one GPU
        set_rng_state(state, Dist(device=torch.device("cuda", 0)))
        assert torch.equal(torch.cuda.get_rng_state(0), state["cuda"][0])
        set_rng_state({**state, "cuda": two_gpus}, Dist(rank=1, world_size=2, device=torch.device("cuda", 0)))
        assert torch.equal(torch.cuda.get_rng_state(0), two_gpus[1])  # rank 1's row, on rank 1's only GPU


@pytest.mark.parametrize("name", ["AdversarialDeepFool", "AdversarialBIM"])
def test_attacks_run_in_float32_under_amp(name):
    from utils.samplers import get_strategy

    ctx = tiny_context(np.arange(0, 60, 3), 4)
    ctx.dist = Dist(precision=Precision("bf16"))
    seen = []
    ctx.model.register_forward_pre_hook(lambda _m, args: seen.append((torch.is_autocast_enabled("cpu"),
                                                                     args[0].dtype)))
    get_strategy(name).select(ctx)
    assert seen and set(seen) == {(False, torch.float32)}


def test_centre_gradients_are_all_reduced_before_unscaling(monkeypatch):
    from utils.methods import center_loss

    events = []
    precision = scaled()
    unscale = precision.unscale
    monkeypatch.setattr(precision, "unscale", lambda optimizer: (events.append("unscale"), unscale(optimizer)))
    monkeypatch.setattr(center_loss.torch_dist, "all_reduce", lambda tensor: events.append("all_reduce"))
    term = center_loss.CenterLossTerm(3, 2, 0.5, lr=0.1, dist=Dist(world_size=2, precision=precision))
    precision.backward(term(torch.randn(4, 2), torch.tensor([0, 1, 2, 0])))
    term.step()
    assert events == ["all_reduce", "unscale"]


def test_jobs_take_gpus_from_the_visible_list(tmp_path, monkeypatch):
    from utils.core.sweep import Job, run_jobs

    script = tmp_path / "show.py"
    script.write_text("import os, sys\nprint(os.environ['CUDA_VISIBLE_DEVICES'])\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    jobs = [Job(f"job{i}", str(tmp_path / f"job{i}"), []) for i in range(3)]
    run_jobs(jobs, 2, str(script), lambda argv: None, lambda line: None)
    seen = [open(tmp_path / f"job{i}.log").read().strip() for i in range(3)]
    assert seen == ["3", "5", "3"], seen


@pytest.mark.slow
@pytest.mark.parametrize("script,argv", [
    ("main_TOD.py", ["--config", "digits", "--epochs", "1", "--cycles", "1", "--trials", "1", "--quiet", "--set",
                     "WIDTH=8", "--max-train-samples", "200", "--set", "START=40", "--set", "SUBSET=40"]),
    ("contrast_main.py", ["--dataset", "digits", "--known-classes", "0,1", "--max-train-samples", "400", "--set",
                          "WIDTH=8", "--quiet", "--mode", "feature", "--batch_size", "32", "--epoch", "1",
                          "--warmup", "0"]),
])
def test_runs_go_on_without_tensorboardx(tmp_path, monkeypatch, capsys, script, argv):
    from conftest import ENTRY, run_main

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # (an import of it raises ImportError)
    code, out, err = run_main(script, [*argv, "--device", "cpu", ENTRY[script][2], str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert out.count("TensorBoard logging off: tensorboardX is not installed") == 1


@pytest.mark.slow
def test_gpu_check_dry_run_passes_and_writes_its_summary(tmp_path):
    from conftest import run_script

    summary = tmp_path / "summary.md"
    result = run_script("bench/gpu_check.py", "--device", "cpu", "--quick", "--threads", "1", "--scripts", "TOD",
                        "--summary", str(summary), cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every run passed" in result.stdout and "torch 2." in result.stdout
    table = summary.read_text()
    for row in ("| main_TOD.py | fp32 |", "| main_TOD.py | bf16 |", "| main_TOD.py | bf16 + channels-last |"):
        assert row in table
    assert "torchrun smoke: skipped (0 CUDA device(s)" in table


def test_gpu_check_full_size_rows_fit_their_pools():
    """The full-size runs ask for no more labels than the synthetic pool of 5,000 images holds (the Rethinking
    row asked for 2,000 + 2 x 2,000)."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import gpu_check

    rethinking = next(r for r in gpu_check.runs(quick=False) if r["name"] == "main_al.py --protocol rethinking")
    argv = rethinking["argv"]

    def value(flag):
        return int(argv[argv.index(flag) + 1])

    assert value("--al-budget") + value("--al-nb-cycles") * value("--query-size") <= 5000
