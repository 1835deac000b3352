"""Known answers for the semi-supervised methods (utils/methods/ssl.py): FixMatch's threshold,
FlexMatch's class-wise thresholds, UDA's TSA, MixMatch's sharpening, MixUp, ramp-up and EMA,
Pseudo-Label's loss, the strong view, and every method's loss on a tiny network."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from config.deepal import ssl_keys
from utils.core.data import BatchTransform
from utils.core.errors import UserError
from utils.methods.ssl import (
    SSL_METHODS,
    StrongAugment,
    cutout,
    decay_weights,
    ema_update,
    fixmatch_unlabeled_loss,
    flexmatch_mapping,
    flexmatch_thresholds,
    linear_rampup,
    make_ssl,
    mixmatch_unlabeled_loss,
    mixup,
    pseudo_label_loss,
    sharpen,
    soft_cross_entropy,
    strong_augment,
    uda_supervised_loss,
    uda_tsa_threshold,
    uda_unlabeled_loss,
)


class Cfg(dict):
    """Settings as the protocol sees them: the SSL keys' defaults, N_EPOCH, BATCH_SIZE and sources."""

    def __init__(self, **given):
        super().__init__({k: key.default for k, key in ssl_keys().items()}, N_EPOCH=100, BATCH_SIZE=4)
        self.update(given)
        self.sources = {k: ("--set" if k in given else "default") for k in self}

    __getattr__ = dict.__getitem__


def build(cfg, num_classes, unlabeled_size, device):
    """The method --ssl (cfg.SSL) names."""
    return make_ssl(cfg, cfg.SSL, num_classes, unlabeled_size, device)


def tiny_net(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, classes))


# ----------------------------------------------------------------------------- FixMatch

def test_fixmatch_ignores_pseudo_labels_below_the_threshold():
    strong = torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 3.0]])
    loss, mask = fixmatch_unlabeled_loss(torch.zeros(2, 3), strong, 0.95)  # p = 1/3 everywhere
    assert loss.item() == 0.0 and mask.tolist() == [0.0, 0.0]
    weak = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # confident (class 0), then not
    loss, mask = fixmatch_unlabeled_loss(weak, strong, 0.95)
    assert mask.tolist() == [1.0, 0.0]
    expected = F.cross_entropy(strong[:1], torch.tensor([0])).item() / 2  # mean over the whole unlabeled batch
    assert loss.item() == pytest.approx(expected)
    # the threshold counts inclusively and the pseudo-label is the weak view's argmax
    p = torch.softmax(weak[0], 0).max().item()
    assert fixmatch_unlabeled_loss(weak, strong, p)[1].tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- FlexMatch

def test_flexmatch_mapping_is_convex_from_0_to_1():
    x = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(flexmatch_mapping(x), torch.tensor([0.0, 1 / 3, 1.0]))
    grid = torch.linspace(0.01, 0.99, 50)
    assert (flexmatch_mapping(grid) < grid).all()


def test_flexmatch_thresholds_follow_learning_status_and_warmup():
    counts = torch.tensor([10, 5, 0])
    # warm-up with few unused samples: beta = sigma / max sigma = [1, .5, 0]
    assert torch.allclose(flexmatch_thresholds(counts, 2, 0.95), 0.95 * torch.tensor([1.0, 1 / 3, 0.0]))
    # warm-up with many unused samples: beta = sigma / 20 = [.5, .25, 0]; thresholds are lower
    warm = flexmatch_thresholds(counts, 20, 0.95)
    assert torch.allclose(warm, 0.95 * torch.tensor([0.5 / 1.5, 0.25 / 1.75, 0.0]))
    # without warm-up the unused samples do not count
    assert torch.allclose(flexmatch_thresholds(counts, 20, 0.95, warmup=False), 0.95 * torch.tensor([1, 1 / 3, 0]))
    # a class with more confident predictions gets a higher threshold; nothing learned yet: all 0
    assert warm[0] > warm[1] > warm[2]
    assert flexmatch_thresholds(torch.zeros(3, dtype=torch.long), 7, 0.95).tolist() == [0.0, 0.0, 0.0]


def test_flexmatch_method_remembers_confident_predictions_per_sample():
    method = SSL_METHODS["flexmatch"](Cfg(SSL="flexmatch"), 3, 4, torch.device("cpu"))
    assert method.class_thresholds().tolist() == [0.0, 0.0, 0.0]  # every sample unused: thresholds 0
    weak = torch.tensor([[10.0, 0, 0], [10.0, 0, 0], [0, 1.0, 0]])  # samples 0, 1 confident class 0
    strong = torch.zeros(3, 3)
    _, mask = method.unlabeled_mask_loss(weak, strong, torch.tensor([0, 1, 2]))
    assert mask.tolist() == [1.0, 1.0, 1.0]  # judged with the thresholds before the update (all 0)
    assert method.selected.tolist() == [0, 0, -1, -1]
    # sigma = [2, 0, 0], 2 unused: beta = [1, 0, 0] -> class 0 at tau, the others at 0
    assert torch.allclose(method.class_thresholds(), torch.tensor([0.95, 0.0, 0.0]))
    _, mask = method.unlabeled_mask_loss(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]), torch.zeros(2, 3),
                                         torch.tensor([3, 2]))
    assert mask.tolist() == [0.0, 1.0]  # p = .79 < .95 for class 0; class 1 passes its threshold 0
    assert method.selected.tolist() == [0, 0, -1, -1]  # neither was above tau


# ----------------------------------------------------------------------------- UDA

def test_uda_tsa_thresholds_per_schedule():
    k = 10
    assert uda_tsa_threshold(0.0, "linear", k) == pytest.approx(0.1)
    assert uda_tsa_threshold(0.0, "log", k) == pytest.approx(0.1)
    assert uda_tsa_threshold(0.0, "exp", k) == pytest.approx(math.exp(-5) * 0.9 + 0.1)
    assert uda_tsa_threshold(0.5, "linear", k) == pytest.approx(0.55)
    assert uda_tsa_threshold(0.5, "log", k) == pytest.approx((1 - math.exp(-2.5)) * 0.9 + 0.1)
    assert uda_tsa_threshold(0.5, "exp", k) == pytest.approx(math.exp(-2.5) * 0.9 + 0.1)
    for schedule in ("linear", "exp", "none"):
        assert uda_tsa_threshold(1.0, schedule, k) == pytest.approx(1.0)
    assert uda_tsa_threshold(1.0, "log", k) == pytest.approx((1 - math.exp(-5)) * 0.9 + 0.1)
    assert uda_tsa_threshold(0.2, "none", 4) == 1.0
    assert uda_tsa_threshold(0.3, "log", k) > uda_tsa_threshold(0.3, "linear", k) > uda_tsa_threshold(0.3, "exp", k)


def test_uda_tsa_masks_confident_labeled_samples():
    logits, y = torch.tensor([[5.0, 0.0], [0.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 0, 0])
    loss, kept = uda_supervised_loss(logits, y, 0.9)  # p* = .993 (masked), .5, .018
    assert kept.tolist() == [0.0, 1.0, 1.0]
    ce = F.cross_entropy(logits, y, reduction="none")
    assert loss.item() == pytest.approx((ce[1] + ce[2]).item() / 2)  # divided by the kept count
    assert uda_supervised_loss(logits[:1], y[:1], 0.5)[0].item() == 0.0  # nothing kept: 0, not nan
    assert uda_supervised_loss(logits, y, 1.0)[0].item() == pytest.approx(ce.mean().item())


def test_uda_consistency_is_kl_with_temperature_and_mask():
    weak, strong = torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    loss, mask = uda_unlabeled_loss(weak, strong)
    p, q = torch.softmax(weak[0], 0), torch.softmax(strong[0], 0)
    assert mask.tolist() == [1.0, 1.0]
    assert loss.item() == pytest.approx((p * (p.log() - q.log())).sum().item() / 2)
    loss, mask = uda_unlabeled_loss(weak, strong, T=0.5, threshold=0.8)  # row 0: max p = .73 is masked
    assert mask.tolist() == [0.0, 1.0]
    t = torch.softmax(weak[1] / 0.5, 0)
    assert loss.item() == pytest.approx((t * (t.log() - torch.log_softmax(strong[1], 0))).sum().item() / 2)


# ----------------------------------------------------------------------------- MixMatch

def test_sharpen_limits_and_known_value():
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    assert torch.allclose(sharpen(p, 1.0), p)
    assert torch.allclose(sharpen(p, 1e-3), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(sharpen(p, 0.5).sum(-1), torch.ones(2))
    assert torch.allclose(sharpen(torch.tensor([[0.2, 0.8]]), 0.5), torch.tensor([[0.04, 0.64]]) / 0.68)


def test_mixup_uses_max_lambda_for_inputs_and_targets():
    x = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mixed_x, mixed_t, lam = mixup(x, t, 0.75, perm=torch.tensor([1, 0]), lam=0.3)
    assert lam == pytest.approx(0.7)
    assert torch.allclose(mixed_x, torch.tensor([[3.0, 3.0], [7.0, 7.0]]))
    assert torch.allclose(mixed_t, torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    torch.manual_seed(0)
    x, t = torch.randn(16, 5), torch.softmax(torch.randn(16, 3), -1)
    mixed_x, mixed_t, lam = mixup(x, t, 0.75)
    assert 0.5 <= lam <= 1
    partners = (mixed_x - lam * x) / (1 - lam)  # = x[perm]
    source = torch.cdist(partners, x).argmin(1)
    assert torch.allclose(partners, x[source], atol=1e-4) and sorted(source.tolist()) == list(range(16))
    assert torch.allclose(mixed_t, lam * t + (1 - lam) * t[source], atol=1e-5)  # same lambda and pairs
    assert ((mixed_x - x).norm(dim=1) <= (mixed_x - x[source]).norm(dim=1) + 1e-6).all()  # closer to the first


def test_mixmatch_losses_and_rampup():
    assert linear_rampup(50, 200) == 0.25 and linear_rampup(300, 200) == 1.0 and linear_rampup(-1, 200) == 0.0
    assert linear_rampup(3, 0) == 1.0
    probs, targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert mixmatch_unlabeled_loss(probs, targets).item() == pytest.approx(2 / 4)  # mean over samples and classes
    logits = torch.tensor([[0.0, 0.0]])
    assert soft_cross_entropy(logits, torch.tensor([[0.3, 0.7]])).item() == pytest.approx(math.log(2))


def test_mixmatch_weight_ramps_over_200_epochs_and_the_ema_is_evaluated():
    method = build(Cfg(SSL="mixmatch"), 3, 8, torch.device("cpu"))
    net = tiny_net()
    weak = BatchTransform([0.5] * 3, [0.25] * 3, crop_padding=1, flip=True)
    torch.manual_seed(1)
    u = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    _, logs = method.loss(net, weak(u), torch.tensor([0, 1, 2, 0]), u, torch.arange(4), weak, None, 0.5)
    assert logs["weight"] == pytest.approx(100 * 50 / 200)  # epoch 50 of the 100: a quarter of lambda_u
    assert method.eval_model(net) is net  # no EMA before the first step
    method.start(net)
    assert method.eval_model(net) is not net
    assert method.steps_per_epoch(labeled_size=5, pool_size=50) == 12  # int(N / B), N the whole pool
    assert method.clamp_gradients is False


def test_ema_update_rule_on_parameters_and_statistics():
    model, ema = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    nn.init.constant_(model.weight, 1.0)
    nn.init.constant_(ema.weight, 0.0)
    model.running_mean.fill_(2.0)
    model.num_batches_tracked.fill_(5)
    ema_update(ema, model, 0.9)
    assert torch.allclose(ema.weight, torch.full((2,), 0.1))
    assert torch.allclose(ema.running_mean, torch.full((2,), 0.2))
    assert ema.num_batches_tracked.item() == 0  # integer counters are not averaged
    decay_weights(model, 0.1)
    assert torch.allclose(model.weight, torch.full((2,), 0.9)) and torch.allclose(model.running_mean,
                                                                                   torch.full((2,), 1.8))


def test_mixmatch_after_step_averages_and_decays_as_the_toolkit():
    method = build(Cfg(SSL="mixmatch"), 3, 8, torch.device("cpu"))
    net = nn.Linear(1, 1, bias=False)
    nn.init.constant_(net.weight, 1.0)
    method.start(net)
    with torch.no_grad():
        net.weight.fill_(2.0)
    method.after_step(net, lr=0.1)
    assert method.eval_model(net).weight.item() == pytest.approx(0.999 * 1 + 0.001 * 2)
    assert net.weight.item() == pytest.approx(2 * (1 - 0.02 * 0.1))  # the toolkit's extra decay


# ----------------------------------------------------------------------------- Pseudo-Label

def test_pseudo_label_loss_uses_confident_argmax_with_gradient():
    logits = torch.tensor([[3.0, 0.0], [0.0, 0.1]], requires_grad=True)
    loss, mask = pseudo_label_loss(logits, 0.9)
    assert mask.tolist() == [1.0, 0.0]
    assert loss.item() == pytest.approx(F.cross_entropy(logits[:1], torch.tensor([0])).item() / 2)
    loss.backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1].abs().sum() == 0  # pushes the confident class up
    assert pseudo_label_loss(logits, 0.0)[1].tolist() == [1.0, 1.0]  # Lee's: every sample


# ----------------------------------------------------------------------------- the strong view

def test_strong_augment_keeps_shape_and_dtype_changes_images_and_is_seeded():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(3)
    first = strong_augment(images)
    torch.manual_seed(3)
    again = strong_augment(images)
    assert first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert (first != images).any(dim=(1, 2, 3)).all()  # Cutout changes every image
    torch.manual_seed(4)
    assert not torch.equal(strong_augment(images), first)
    gray = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    assert StrongAugment("autoaugment", groups=2, cutout=0)(gray).shape == gray.shape
    with pytest.raises(TypeError):
        strong_augment(images.float())


def test_strong_augment_groups_draw_their_own_ops():
    images = torch.full((8, 3, 8, 8), 100, dtype=torch.uint8)
    images[:, :, :4] = 200
    torch.manual_seed(0)
    out = StrongAugment(groups=8, prob=1.0, cutout=0)(images)
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1  # one draw per slice
    torch.manual_seed(0)
    one = StrongAugment(groups=1, prob=1.0, cutout=0)(images)
    assert len({tuple(o.flatten().tolist()) for o in one}) == 1  # one draw for the whole batch


def test_cutout_greys_one_clipped_square_per_image():
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    torch.manual_seed(0)
    out = cutout(images, 0.5, fill=127)
    grey = out[:, 0] == 127
    rows, cols = grey.any(2).sum(1), grey.any(1).sum(1)
    assert (grey.sum((1, 2)) == rows * cols).all()  # a rectangle
    assert set(rows.tolist()) <= {3, 4} and set(cols.tolist()) <= {3, 4} and (rows * cols == 16).any()
    assert torch.equal(cutout(images, 0.0), images)


# ----------------------------------------------------------------------------- every method on a tiny network

@pytest.mark.parametrize("name", sorted(SSL_METHODS))
def test_every_method_gives_a_finite_loss_whose_gradient_reaches_the_parameters(name):
    method = build(Cfg(SSL=name, SSL_TSA="linear") if name == "uda" else Cfg(SSL=name), 3, 10,
                      torch.device("cpu"))
    net = tiny_net()
    weak = BatchTransform([0.5] * 3, [0.25] * 3, crop_padding=1, flip=True)
    strong = (lambda u: weak(method.strong_augment(u))) if method.strong_augment is not None else None

    def run(seed):
        torch.manual_seed(seed)
        u8 = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
        net.zero_grad()
        loss, logs = method.loss(net, weak(u8[:4]), torch.tensor([0, 1, 2, 0]), u8[4:], torch.arange(6), weak,
                                 strong, 0.3)
        return loss, logs

    state = copy.deepcopy(net.state_dict())
    loss, logs = run(0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert logs and all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    if name != "flexmatch":  # FlexMatch's memory changes with each step
        net.load_state_dict(state)
        again, _ = run(0)
        assert again.item() == loss.item()  # deterministic under the seed


def test_method_defaults_follow_the_toolkit():
    cpu = torch.device("cpu")
    fix = build(Cfg(SSL="fixmatch"), 10, 5, cpu)
    assert (fix.batch_size, fix.unlabeled_batch_size, fix.threshold, fix.lambda_u) == (250, 1350, 0.95, 1.0)
    assert fix.steps_per_epoch(labeled_size=501, pool_size=50_000) == 3 and fix.eval_model("net") == "net"
    assert fix.stop_early(10.0, 10.0 + 1e-4) and not fix.stop_early(10.0, 10.1) and not fix.stop_early(None, 1)
    flex = build(Cfg(SSL="flexmatch"), 10, 5, cpu)
    assert flex.unlabeled_batch_size == 1750
    uda = build(Cfg(SSL="uda", BATCH_SIZE=256), 10, 5, cpu)
    assert (uda.batch_size, uda.unlabeled_batch_size, uda.T, uda.threshold) == (256, 256, 1.0, 0.0)
    assert uda.strong_augment.policy == "autoaugment" and uda.strong_augment.cutout == 0
    mix = build(Cfg(SSL="mixmatch", BATCH_SIZE=64), 10, 5, cpu)
    assert (mix.batch_size, mix.lambda_u, mix.T, mix.ema_decay, mix.rampup) == (64, 100.0, 0.5, 0.999, 200.0)
    assert not mix.stop_early(1.0, 1.0)  # MixMatch runs every epoch
    assert build(Cfg(SSL="mixmatch", SSL_EARLY_STOP=1e-3), 10, 5, cpu).stop_early(1.0, 1.0)
    assert build(Cfg(SSL="fixmatch", SSL_THRESHOLD=0.5, SSL_MU=2.0), 10, 5, cpu).unlabeled_batch_size == 500


def test_settings_a_method_does_not_read_are_refused():
    assert build(Cfg(), 10, 5, torch.device("cpu")) is None
    with pytest.raises(UserError, match="SSL_ALPHA"):
        build(Cfg(SSL="fixmatch", SSL_ALPHA=0.5), 10, 5, torch.device("cpu"))
    with pytest.raises(UserError, match="SSL_THRESHOLD"):
        build(Cfg(SSL="mixmatch", SSL_THRESHOLD=0.5), 10, 5, torch.device("cpu"))
    with pytest.raises(UserError, match="--ssl"):
        build(Cfg(SSL_MU=3.0), 10, 5, torch.device("cpu"))
    with pytest.raises(UserError, match="SSL_EMA"):
        build(Cfg(SSL="fixmatch", SSL_EMA_WD=0.1), 10, 5, torch.device("cpu"))


# ----------------------------------------------------------------------------- through main_al.py
def ssl_command(tmp_path, *flags):
    return ["--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--max-train-samples", "300",
            "--nStart", "10", "--nQuery", "5", "--n_epoch", "1", "--cycles", "2", "--quiet", "--lr", "0.01",
            "--set", "SSL_BATCH=16", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *flags]


@pytest.mark.parametrize("toolkit,method,strategy", [
    ("fixmatch", "fixmatch", "RandomSampling"), ("flexmatch", "flexmatch", "RandomSampling"),
    ("uda", "uda", "RandomSampling"), ("pseudolabel", "pseudolabel", "RandomSampling"),
    ("ssl_Random", "mixmatch", "RandomSampling"), ("ssl_LC", "mixmatch", "LeastConfidence"),
    ("ssl_Consistency", "mixmatch", "ConsistencySampling"), ("ssl_Diff2AugDirect", "mixmatch", "TwoViewMargin"),
    ("ssl_Diff2AugKmeans", "mixmatch", "TwoViewMarginKMeans")])
def test_the_toolkit_ssl_names_stand_for_a_method_and_a_query(toolkit, method, strategy):
    import main_al
    from utils.protocols.deepal import DeepAL

    args, cfg = main_al.parse_args(["--protocol", "deepal", "--strategy", toolkit])
    protocol = DeepAL(cfg, args)
    assert protocol.strategy_name() == strategy and protocol.ssl == method
    args, cfg = main_al.parse_args(["--protocol", "deepal", "--strategy", toolkit, "--ssl", method])
    assert DeepAL(cfg, args).strategy_name() == strategy  # (saying it twice is fine)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [["--strategy", "EntropySampling", "--ssl", "fixmatch", "--set", "SSL_MU=2"],
                                   ["--strategy", "flexmatch", "--set", "SSL_MU=2"],
                                   ["--strategy", "uda", "--set", "SSL_TSA=linear"],
                                   ["--strategy", "pseudolabel", "--set", "SSL_MU=2"],
                                   ["--strategy", "ssl_Diff2AugKmeans"]])
def test_every_method_runs_rounds_with_a_query(tmp_path, capsys, flags):
    from conftest import run_main

    from utils.core.results import read_config, read_cycles

    code, _out, err = run_main("main_al.py --protocol deepal", ssl_command(tmp_path, *flags), capsys)
    assert code == 0, err
    rows = read_cycles(str(tmp_path / "run"))
    assert [r["n_labeled"] for r in rows] == [30, 45] and all(0 <= r["test_acc"] <= 100 for r in rows)
    assert read_config(str(tmp_path / "run"))["derived"]["ssl"] in SSL_METHODS


def test_mixmatch_leaves_its_ema_network_as_the_round_model(tmp_path, capsys, monkeypatch):
    """The network tested and queried is the EMA (method.eval_model), copied into the round's model."""
    from conftest import run_main

    from utils.methods import ssl

    seen = {}
    original = ssl.SemiSupervised.eval_model

    def eval_model(self, model):
        tested = original(self, model)
        seen["ema"] = {k: v.clone() for k, v in tested.state_dict().items()}
        seen["model"] = model
        return tested

    monkeypatch.setattr(ssl.SemiSupervised, "eval_model", eval_model)
    code, _out, err = run_main("main_al.py --protocol deepal",
                               ssl_command(tmp_path, "--strategy", "ssl_Random", "--cycles", "1"), capsys)
    assert code == 0, err
    assert seen["ema"] is not None and seen["model"] is not None
    for k, v in seen["model"].state_dict().items():
        assert torch.equal(v, seen["ema"][k])


@pytest.mark.parametrize("flags,message", [
    (["--strategy", "VAAL", "--ssl", "fixmatch"], "--ssl fixmatch trains the task model its own way; VAAL"),
    (["--strategy", "fixmatch", "--ssl", "uda"], "--strategy fixmatch is the toolkit's --ssl fixmatch"),
    (["--strategy", "EntropySampling", "--set", "SSL_MU=2"], "SSL_MU set semi-supervised training; choose"),
    (["--strategy", "EntropySampling", "--ssl", "mixmatch", "--set", "SSL_THRESHOLD=0.5"],
     "--ssl mixmatch does not read SSL_THRESHOLD"),
])
def test_bad_ssl_combinations_are_refused_before_anything_is_written(tmp_path, capsys, flags, message):
    from conftest import run_main

    code, _out, err = run_main("main_al.py --protocol deepal", ssl_command(tmp_path, *flags), capsys)
    assert code == 2 and message in err and not (tmp_path / "run").exists(), err


def test_a_sweep_keeps_the_toolkit_ssl_names_as_given():
    import main_al
    from utils.protocols.deepal import DeepAL

    args, cfg = main_al.parse_args(["--protocol", "deepal", "--strategy", "fixmatch,entropy,ssl_LC"])
    protocol = DeepAL(cfg, args)
    assert protocol.sweep_strategies(["fixmatch", "entropy", "ssl_LC"]) == ["fixmatch", "EntropySampling", "ssl_LC"]
    assert protocol.sweep_strategies(["all"]) == DeepAL.supported_strategies()
    with pytest.raises(UserError, match="unknown strategy"):
        protocol.sweep_strategies(["fixmatch", "nonsense"])


@pytest.mark.slow
def test_fixmatch_with_5_percent_labels_beats_supervised_training_on_the_same_labels(tmp_path, capsys):
    """digits, 71 labels (5 %), the slim ResNet-18, 50 epochs, two trials (seeds 1 and 2: the same initial
    labels and network for both methods): FixMatch at its defaults (tau 0.95, lambda_u 1, RandAugment +
    Cutout) with batches of 16 labeled + 7 x 16 unlabeled images, against the supervised round on the same
    labels (measured: 93.3 / 87.2 % against 81.1 / 80.0 %)."""
    from conftest import run_main

    from utils.core.results import read_cycles

    accuracy = {}
    for method in ("none", "fixmatch"):
        out = tmp_path / method
        extra = ["--set", "SSL_BATCH=16", "--set", "SSL_MU=7", "--set", "SSL_EARLY_STOP=0"] if method != "none" else []
        code, _out, err = run_main("main_al.py --protocol deepal", [
            "--protocol", "deepal", "--dataset", "digits", "--model", "ResNet18", "--strategy", "RandomSampling",
            "--ssl", method, "--nStart", "5", "--n_epoch", "50", "--cycles", "1", "--trials", "2", "--lr", "0.01",
            "--set", "BATCH_SIZE=16", *extra, "--quiet", "--data-root", str(tmp_path / "data"), "--out", str(out)],
            capsys)
        assert code == 0, err
        accuracy[method] = [r["test_acc"] for r in read_cycles(str(out))]
    assert all(n == 71 for n in [r["n_labeled"] for r in read_cycles(str(tmp_path / "fixmatch"))])
    gains = [f - s for f, s in zip(accuracy["fixmatch"], accuracy["none"])]
    assert min(gains) > 2 and sum(gains) / 2 > 5, accuracy
