"""--amp and --channels-last (utils/core/precision.py): the forward runs in bf16 with float32 outputs, off
changes nothing, fp16 needs CUDA, and every training loop of every script trains in bf16 on the CPU with
finite float32 losses and an accuracy close to float32's."""

import json

import pytest
import torch
from conftest import ENTRY, run_main
from torch import nn

from models.output import ModelOutput
from utils.core import precision as precision_module
from utils.core.distributed import Dist, unwrap, wrap
from utils.core.errors import UserError
from utils.core.precision import Precision, float32
from utils.core.results import read_cycles

pytestmark = pytest.mark.usefixtures("one_thread")


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)
        self.seen = []  # (input dtype, input channels-last) of every conv call

    def forward(self, x):
        self.seen.append((x.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        h = self.conv(x).mean((2, 3))
        return ModelOutput(self.fc(h), h, stages=[h, h])


def test_float32_converts_nested_outputs_and_keeps_the_rest():
    out = ModelOutput(torch.ones(2, 3, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float16),
                      None, [torch.zeros(1, dtype=torch.bfloat16), torch.arange(3)])
    converted = float32(out)
    assert isinstance(converted, ModelOutput) and converted.cons_logits is None
    assert converted.logits.dtype == converted.features.dtype == converted.stages[0].dtype == torch.float32
    assert converted.stages[1].dtype == torch.int64
    assert float32({"a": torch.ones(1, dtype=torch.bfloat16)})["a"].dtype == torch.float32


def test_off_returns_the_network_itself_and_bf16_runs_it_in_bf16_with_float32_outputs():
    net = ConvNet()
    assert wrap(net, Dist()) is net
    wrapped = wrap(net, Dist(precision=Precision("bf16")))
    assert unwrap(wrapped) is net and list(wrapped.parameters()) == list(net.parameters())
    out = wrapped(torch.randn(2, 3, 8, 8))
    assert out.logits.dtype == out.features.dtype == out.stages[0].dtype == torch.float32
    with Precision("bf16").autocast():  # what ran inside: the conv and the linear layer in bf16
        assert net.conv(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
    loss = nn.functional.cross_entropy(out.logits, torch.tensor([0, 1]))
    assert loss.dtype == torch.float32
    loss.backward()
    assert net.conv.weight.grad.dtype == torch.float32 and torch.isfinite(net.conv.weight.grad).all()


def test_channels_last_converts_the_weights_and_the_inputs():
    net = ConvNet()
    wrapped = Precision(channels_last=True).wrap(net)
    wrapped(torch.randn(2, 3, 8, 8))
    assert net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.seen == [(torch.float32, True)]


def test_fp16_needs_cuda_and_bad_modes_are_refused():
    with pytest.raises(UserError, match="--amp fp16 needs a CUDA device.*--amp bf16"):
        Precision("fp16", device_type="cpu")
    with pytest.raises(UserError, match="choose one of off, bf16, fp16"):
        Precision("fp8")


def test_minimize_off_is_the_plain_sequence_bit_for_bit():
    torch.manual_seed(0)
    nets = [ConvNet(), ConvNet()]
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))
    optimizers = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in nets]
    for _ in range(3):
        loss = nn.functional.cross_entropy(nets[0](x).logits, y)
        optimizers[0].zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(nets[0].parameters(), 0.01)
        optimizers[0].step()
        optimizers[1].zero_grad()
        Precision().minimize(nn.functional.cross_entropy(nets[1](x).logits, y), optimizers[1], clip_value=0.01)
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with loss scaling needs CUDA")
def test_fp16_scales_the_loss_and_steps_every_optimizer():
    net = ConvNet().cuda()
    other = nn.Linear(3, 3).cuda()
    precision = Precision("fp16", device_type="cuda")
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.SGD(other.parameters(), lr=0.1)]
    before = other.weight.detach().clone()
    out = precision.wrap(net)(torch.randn(4, 3, 8, 8, device="cuda"))
    loss = nn.functional.cross_entropy(other(out.logits), torch.tensor([0, 1, 2, 0], device="cuda"))
    precision.minimize(loss, optimizers[0], clip_value=0.1, before_update=lambda: precision.step(optimizers[1]))
    assert precision.scaler.get_scale() > 1 and not torch.equal(before, other.weight)


# ---------------------------------------------------------------------------------------------- every loop
RUNS = {  # script -> a tiny run that goes through each of its training loops (and pool scoring)
    "main_TOD.py": ["--sampling", "TOD", "--auxiliary", "TOD", "--epochs", "1", "--cycles", "2", "--trials", "1",
                    "--set", "WIDTH=8"],
    "main_LL4AL.py": ["--sampling", "LL4AL", "--auxiliary", "LL4AL", "--epochs", "1", "--cycles", "2", "--trials",
                      "1", "--set", "WIDTH=8"],
    "main_al.py --protocol deepal": ["--strategy", "VAAL", "--model", "ResNet18", "--n_epoch", "1", "--cycles", "2",
                                     "--nQuery", "2", "--set", "VAE_WIDTH=8"],
    "main_al.py --protocol rethinking": ["--al-method", "random", "--arch", "lenet", "--al-budget", "30",
                                         "--al-nb-cycles", "2", "--epochs", "1", "--set", "MAX_TRAIN_SAMPLES=300"],
    "AL_center_temperature.py": ["--init-percent", "8", "--query-batch", "20", "--max-query", "2", "--max-epoch",
                                 "1", "--weight-cent", "0.1", "--known-T", "0.5", "--unknown-T", "0.5"],
}


@pytest.fixture
def losses(monkeypatch):
    """Every loss a training loop backpropagates, and the dtypes float32() converted (bf16: the forward ran
    under autocast)."""
    seen = {"losses": [], "converted": set()}
    backward, convert = Precision.backward, precision_module.float32

    def record_backward(self, loss):
        seen["losses"].append((loss.dtype, bool(torch.isfinite(loss))))
        backward(self, loss)

    def record_float32(value):
        if isinstance(value, torch.Tensor):
            seen["converted"].add(value.dtype)
        return convert(value)

    monkeypatch.setattr(Precision, "backward", record_backward)
    monkeypatch.setattr(precision_module, "float32", record_float32)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("script", list(RUNS))
def test_every_training_loop_trains_in_bf16_on_the_cpu(tmp_path, capsys, losses, script):
    module, base, folder_flag = ENTRY[script]
    out = tmp_path / "run"
    code, _out, err = run_main(script, [*base, *RUNS[script], "--amp", "bf16", "--channels-last", "--quiet",
                                        "--data-root", str(tmp_path / "data"), folder_flag, str(out)], capsys)
    assert code == 0, err
    assert losses["losses"] and all(dtype == torch.float32 and finite for dtype, finite in losses["losses"])
    assert torch.bfloat16 in losses["converted"]
    if folder_flag == "--out":
        saved = json.load(open(out / "config.json"))
        assert saved["run"]["amp"] == "bf16" and saved["run"]["channels_last"] is True
        assert len(read_cycles(str(out))) == 2


@pytest.mark.slow
def test_ccal_encoders_and_classifiers_train_in_bf16(tmp_path, capsys, losses):
    common = ["--dataset", "digits", "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8",
              "--quiet", "--amp", "bf16", "--data-root", str(tmp_path / "data")]
    for mode, name in (("senmatic", "semantic"), ("feature", "distinctive")):
        code, _out, err = run_main("contrast_main.py", [*common, "--mode", mode, "--batch_size", "16", "--epoch", "1",
                                                        "--warmup", "0", "--logdir", str(tmp_path / name)], capsys)
        assert code == 0, err
    code, _out, err = run_main("active_main.py", [
        *common, "--target", "2", "--split", "1", "--epochs", "1", "--ood_samples", "1", "--set", "CLASSIFIER_SEEDS=1",
        "--load_feature_path", str(tmp_path / "distinctive" / "last.model"),
        "--load_senmatic_path", str(tmp_path / "semantic" / "last.model"), "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert losses["losses"] and all(dtype == torch.float32 and finite for dtype, finite in losses["losses"])
    assert torch.bfloat16 in losses["converted"]


@pytest.mark.slow
def test_bf16_accuracy_is_within_a_few_points_of_float32(tmp_path, capsys):
    accuracy = {}
    for amp in ("off", "bf16"):
        out = tmp_path / amp
        code, _out, err = run_main("main_TOD.py", ["--config", "digits", "--epochs", "10", "--cycles", "1", "--trials",
                                                   "1", "--quiet", "--amp", amp, "--data-root", str(tmp_path / "data"),
                                                   "--out", str(out)], capsys)
        assert code == 0, err
        accuracy[amp] = read_cycles(str(out))[0]["test_acc"]
    assert accuracy["off"] > 40  # (trained: 10 classes)
    assert abs(accuracy["bf16"] - accuracy["off"]) < 6, accuracy
