"""CCAL (contrast_main.py, active_main.py): NT-Xent and its cross-rank gather, the augmentations
and schedule, the mismatch pool, the joint query, end-to-end runs on digits, resume, bad input."""

import math
import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, run_script

import active_main
import contrast_main
from config import ccal as ccal_config
from models.csi import CSIResNet
from utils.core.cli import run_cli
from utils.core.data import build_data
from utils.core.openset import CCAL_KNOWN, mismatch_pool
from utils.core.results import read_cycles
from utils.methods.contrastive import SimCLRAugment, nt_xent, training_views, warmup_schedule
from utils.protocols.ccal import (
    ccal_pool,
    ccal_query,
    contrast_set,
    distinctive_scores,
    even_batches,
    joint_selection,
    make_augment,
    semantic_scores,
)

CFG = {k: getattr(ccal_config, k) for k in ("JITTER", "GRAY_P", "CROP_RATIO")}
pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["--dataset", "digits", "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8", "--quiet"]


# ----------------------------------------------------------------------------- NT-Xent

def seed_nt_xent(z1, z2, temperature):
    """The seed's formula (A.4), written out: -log(E_i,pos / (sum_j E_ij + 1e-8) + 1e-8)."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    e = torch.exp(z @ z.T / temperature) * (1 - torch.eye(len(z)))
    m = len(z1)
    pos = torch.cat([torch.arange(m, 2 * m), torch.arange(m)])
    return -torch.log(e[torch.arange(2 * m), pos] / (e.sum(1) + 1e-8) + 1e-8).mean()


def test_nt_xent_known_answers():
    z = torch.eye(4, 8)  # orthonormal rows: cosine 1 with the positive, 0 with everything else
    assert nt_xent(z, z, 0.5).item() == pytest.approx(math.log(1 + 6 * math.exp(-2)), abs=1e-6)
    swapped = nt_xent(z, z[[1, 2, 3, 0]], 0.5).item()  # each positive orthogonal, one negative identical
    assert swapped == pytest.approx(math.log(math.exp(2) + 6), abs=1e-6)
    z1, z2 = torch.randn(2, 16, 32).unbind(0)
    assert nt_xent(z1, z2, 0.5).item() == pytest.approx(seed_nt_xent(z1, z2, 0.5).item(), abs=1e-5)
    assert nt_xent(z1, z1 + 0.01 * z2, 0.5) < nt_xent(z1, z2, 0.5)


def _gather_worker(rank, port, world):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    x1, x2, head = torch.randn(8, 6), torch.randn(8, 6), torch.nn.Linear(6, 5)
    single = torch.nn.Linear(6, 5)
    single.load_state_dict(head.state_dict())
    expected = nt_xent(single(x1), single(x2), 0.5)  # the whole global batch in one process
    expected.backward()
    net = DistributedDataParallel(head)
    part = slice(4 * rank, 4 * rank + 4)
    loss = nt_xent(net(x1[part]), net(x2[part]), 0.5, gather=True)
    loss.backward()
    assert torch.allclose(loss, expected, atol=1e-6), (loss, expected)
    assert torch.allclose(head.weight.grad, single.weight.grad, atol=1e-6)  # DDP's mean = the single gradient
    dist.destroy_process_group()


def test_gathered_nt_xent_equals_the_single_process_loss_and_gradient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_gather_worker, args=(port, 2), nprocs=2)


# ----------------------------------------------------------------------------- views and schedule

def test_augmentations_are_per_image_seeded_and_identity_without_randomness():
    x = torch.rand(6, 3, 16, 16)
    still = SimCLRAugment({"p": 0.0, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}, 0.0,
                          scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(still(x, still.sample(6, torch.Generator().manual_seed(0), "cpu")), x, atol=1e-5)
    augment = make_augment(CFG, 0.08, False)
    same = x[:1].repeat(6, 1, 1, 1)
    out = augment(same, augment.sample(6, torch.Generator().manual_seed(1), "cpu"))
    assert out.shape == same.shape and 0 <= out.min() and out.max() <= 1
    assert len({round(v, 4) for v in out.flatten(1).sum(1).tolist()}) == 6  # each image its own parameters
    again = augment(same, augment.sample(6, torch.Generator().manual_seed(1), "cpu"))
    assert torch.equal(out, again)
    crops = make_augment(CFG, 0.54, True).sample(100, torch.Generator().manual_seed(2), "cpu")["crop"]
    assert torch.allclose(crops[:, 0, 0] * crops[:, 1, 1], torch.full((100,), 0.54))  # the fixed query crop area
    rows, labels = training_views(x, augment, torch.Generator().manual_seed(3), 4)
    assert rows.shape == (48, 3, 16, 16) and labels.tolist() == ([0] * 6 + [1] * 6 + [2] * 6 + [3] * 6) * 2


def test_lr_warms_up_tenfold_then_follows_the_offset_cosine():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)  # the peak, 0.1 x 10
    scheduler = warmup_schedule(optimizer, epochs=40, steps_per_epoch=5, warmup=10, multiplier=10)
    lrs = []
    for _ in range(40 * 5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for step, lr in enumerate(lrs):
        e = step / 5
        expected = 0.1 * (1 + 0.9 * e) if e <= 10 else 0.5 * (1 + math.cos(math.pi * (e - 10) / 40))
        assert lr == pytest.approx(expected, abs=1e-9)


def test_even_batches_give_every_rank_the_same_steps():
    batches = even_batches(np.arange(21), 4, 2, seed=0, min_size=2)(0)
    assert [len(b) for b in batches] == [4, 4, 4, 4, 3, 2]  # 21 = 2 x 8 + 5: the last pair splits 3 + 2
    assert sorted(sum(batches, [])) == list(range(21))
    assert [len(b) for b in even_batches(np.arange(21), 4, 2, 0, min_size=4)(0)] == [4, 4, 4, 4]  # drop_last


# ----------------------------------------------------------------------------- the pool (A.2)

@pytest.mark.parametrize("mismatch,unknown", [(0.2, 2300), (0.4, 6134), (0.6, 13800), (0.8, 36801)])
def test_mismatch_pool_counts_of_cifar_sizes(mismatch, unknown):
    for targets, known in ((np.repeat(np.arange(10), 5000), CCAL_KNOWN["cifar10"]),
                           (np.repeat(np.arange(100), 500), CCAL_KNOWN["cifar100"])):
        pool = mismatch_pool(targets, known, mismatch, 800, 0)
        in_pool = pool.is_known(targets, pool.pool_idx)
        assert len(pool.labeled_idx) == 800 and pool.is_known(targets, pool.labeled_idx).all()
        assert in_pool.sum() == 9200 and (~in_pool).sum() == unknown and pool.num_known == 10_000
        assert len(contrast_set(pool)) == 10_000 + unknown
        assert not np.intersect1d(pool.labeled_idx, pool.pool_idx).size


def test_ccal_pool_defaults_and_checks():
    data = SimpleNamespace(name="digits", num_classes=10, train_targets=np.repeat(np.arange(10), 100),
                           train_idx=np.arange(1000))
    args = SimpleNamespace(known_classes="2,5", initial_budget=None, mismatch=0.5)
    pool = ccal_pool(args, vars(ccal_config), data)
    assert args.initial_budget == 16 and pool.known_classes.tolist() == [2, 5]  # 8 % of the 200 known images
    assert len(pool.pool_idx) == 184 + 184
    from utils.core.cli import UserError

    for known, budget, message in (("2,2", None, "distinct"), (None, None, "--known-classes 0,1"),
                                   ("2,5", 1, "fewer than 2"), ("2,5", 500, "lower --initial-budget")):
        with pytest.raises(UserError, match=message):
            ccal_pool(SimpleNamespace(known_classes=known, initial_budget=budget, mismatch=0.5), vars(ccal_config),
                      data)


# ----------------------------------------------------------------------------- the joint query (A.6)

def test_scores_have_their_known_answers():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sigma, pseudo = semantic_scores(torch.tensor([[1.0, 0.1], [-1.0, 0.0], [0.2, 1.0]]), anchors,
                                    torch.tensor([0, 1, 0]), k=100.0, t=0.9)
    assert pseudo.tolist() == [0, 1, 1]  # [-1, 0]: cos -1, 0, -0.71 -> [0, 1], labelled 1
    assert sigma[1].item() == pytest.approx(math.tanh(100 * (0 - 0.9) / 2))  # min-max 0 -> about -1
    pool = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [N=2, R=1, D=2]
    class_anchors = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])
    s = 1 / math.sqrt(2)
    expected = [2 * 1 - s + s, 2 * 1 - s + s]  # s1 = 1, s2 = cos 45, cos(a1, a2) = cos 45
    assert distinctive_scores(pool, class_anchors).tolist() == pytest.approx(expected)
    big = torch.randn(50, 4, 8)
    assert torch.allclose(distinctive_scores(big, big[:7], chunk=3), distinctive_scores(big, big[:7]))


def test_joint_selection_takes_the_top_target_per_class_among_its_pseudo_labels():
    sigma = torch.tensor([0.9, 0.8, 1.0, -1.0, 0.5, 0.7])
    pseudo = torch.tensor([0, 0, 1, 1, 0, 1])
    distinctive = torch.tensor([[0.0, 1.0], [0.5, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.2], [1.0, 0.9]])
    # class 0 scores: 1.9, 1.3, -1, -1, 1.5, -1 -> 0, 4; class 1: -1, -1, 2.0, 0.0, -1, 0.8 -> 2, 5
    assert joint_selection(sigma, pseudo, distinctive, 2).tolist() == [0, 4, 2, 5]
    # class 1 has 3 candidates; its 4th pick is a -1 filler, the lowest position not already taken
    assert joint_selection(sigma, pseudo, distinctive, 4).tolist() == [0, 4, 1, 2, 5, 3]


def test_query_picks_only_from_the_pool_within_the_per_class_quota():
    generator = torch.Generator().manual_seed(0)
    feature_idx = np.arange(0, 400, 2)  # the images the encoders know (every other index)
    features = (torch.randn(200, 4, 16, generator=generator), torch.randn(200, 16, generator=generator))
    labeled = feature_idx[:12]
    labels = np.array([0, 1, 2] * 4)
    pool = np.setdiff1d(feature_idx, np.concatenate([labeled, feature_idx[100:150]]))  # 50 already discarded
    queried, candidates = ccal_query(features, feature_idx, pool, labeled, labels, 3, 100.0, 0.9, 7)
    assert len(queried) == len(set(queried.tolist())) <= 21 and np.isin(queried, pool).all()
    assert sum(candidates) == len(pool)
    _, pseudo = semantic_scores(features[1][np.searchsorted(feature_idx, pool)], features[1][:12],
                                torch.as_tensor(labels), 100, 0.9)
    assert all(c >= 7 for c in candidates)  # enough candidates per class: exactly 7 picks of each pseudo-label
    assert np.bincount(pseudo[np.searchsorted(pool, queried)].numpy(), minlength=3).tolist() == [7, 7, 7]


# ----------------------------------------------------------------------------- end to end on digits

def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def bad(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    for mode, shift, name in (("senmatic", "none", "semantic"), ("feature", "rotation", "distinctive")):
        contrast_main.main([*TINY, "--mode", mode, "--shift_trans_type", shift, "--batch_size", "32", "--epoch", "1",
                            "--logdir", str(folder / name)])
    return folder


def active_args(encoders, out, *extra):
    return [*TINY, "--mode", "eval", "--k", "100.0", "--t", "0.9", "--model", "resnet18", "--mismatch", "0.8",
            "--target", "4", "--shift_trans_type", "rotation", "--ood_samples", "2", "--resize_factor", "0.54",
            "--resize_fix", "--load_feature_path", str(encoders / "distinctive" / "last.model"),
            "--load_senmatic_path", str(encoders / "semantic" / "last.model"), "--load_path", str(encoders),
            "--split", "2", "--epochs", "1", "--set", "CLASSIFIER_SEEDS=2", "--out", str(out), *extra]


def test_seed_contrast_command_under_the_old_launcher_writes_one_encoder(tmp_path):
    result = ok(run_script("-m", "torch.distributed.launch", "--nproc_per_node=2", "--master_port",
                           str(29600 + os.getpid() % 1000), os.path.join(ROOT, "contrast_main.py"), "--mismatch", "0.8",
                           "--dataset", "digits", "--model", "resnet18", "--mode", "feature", "--shift_trans_type",
                           "rotation", "--batch_size", "16", "--epoch", "1", "--logdir", "./model/distinctive",
                           "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8",
                           cwd=str(tmp_path)))
    assert "2 process(es) on cpu" in result.stdout and result.stdout.count("[epoch 1/1]") == 1
    folder = tmp_path / "model" / "distinctive"
    assert sorted(os.listdir(folder)) == ["last.config", "last.model", "last.optim", "tb"]
    model = CSIResNet.from_state_dict(torch.load(folder / "last.model", weights_only=True), "x")
    assert model.shift_cls_layer.out_features == 4 and model.stem[0].in_channels == 1


def test_active_main_queries_trains_and_records_each_cycle(encoders, tmp_path, capsys):
    out = tmp_path / "run"
    active_main.main(active_args(encoders, out, "--print_score"))
    assert "pseudo-labelled per known class" in capsys.readouterr().out
    rows = read_cycles(str(out))
    assert [(r["cycle"], r["n_labeled"]) for r in rows][0] == (0, 6)
    assert [r["n_queried"] for r in rows] == [8, 8, 0] and math.isnan(rows[2]["precision"])
    labeled = [np.load(out / "labeled" / f"trial0_cycle{c}.npy") for c in range(3)]
    targets = build_data("digits", max_train_samples=400).train_targets
    for row, before, after in zip(rows, [labeled[0][:6]] + labeled[:-1], labeled):
        assert np.isin(targets[after], [0, 1]).all() and len(np.unique(after)) == len(after)
        assert len(after) - len(before) == row["n_queried_known"]
        assert row["recall"] == pytest.approx(len(after) / 80, abs=1e-6)
        if row["n_queried"]:
            assert row["precision"] == pytest.approx(row["n_queried_known"] / row["n_queried"], abs=1e-6)
    checkpoint = torch.load(out / "checkpoints" / "trial0.pt", weights_only=True)
    unknown = checkpoint["unknown_idx"].numpy()
    assert len(unknown) == 16 - (len(labeled[-1]) - 6) and not np.isin(targets[unknown], [0, 1]).any()


def test_active_main_resume_reproduces_the_run(encoders, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    active_main.main(active_args(encoders, full))
    active_main.main(active_args(encoders, resumed, "--cycles", "1"))
    active_main.main(active_args(encoders, resumed, "--resume"))
    strip = [(r["cycle"], r["n_labeled"], r["test_acc"], r["n_queried_known"]) for r in read_cycles(str(full))]
    assert strip == [(r["cycle"], r["n_labeled"], r["test_acc"], r["n_queried_known"])
                     for r in read_cycles(str(resumed))]
    for c in range(3):
        assert np.array_equal(np.load(full / "labeled" / f"trial0_cycle{c}.npy"),
                              np.load(resumed / "labeled" / f"trial0_cycle{c}.npy"))


def test_contrast_resume_after_a_crash_reproduces_the_weights(tmp_path, monkeypatch):
    common = [*TINY, "--mode", "feature", "--batch_size", "64", "--epoch", "2", "--save_step", "1"]
    contrast_main.main([*common, "--logdir", str(tmp_path / "full")])
    real_save = contrast_main.save_encoder

    def save_then_crash(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(contrast_main, "save_encoder", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        contrast_main.main([*common, "--logdir", str(tmp_path / "cut")])
    monkeypatch.setattr(contrast_main, "save_encoder", real_save)
    assert torch.load(tmp_path / "cut" / "last.config", weights_only=True)["epoch"] == 1
    contrast_main.main([*common, "--logdir", str(tmp_path / "cut"), "--resume_path", str(tmp_path / "cut")])
    full = torch.load(tmp_path / "full" / "last.model", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.model", weights_only=True)
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_bad_input_is_one_line_exit_2_and_writes_nothing(encoders, tmp_path, capsys):
    logdir = str(tmp_path / "enc")
    contrast = [*TINY, "--epoch", "1", "--logdir", logdir]
    no_known = ["--dataset", "digits", "--mode", "feature", "--logdir", logdir]
    assert "--known-classes" in bad(contrast_main.main, no_known, capsys)
    assert "--mismatch" in bad(contrast_main.main, [*contrast, "--mode", "feature", "--mismatch", "1.5"], capsys)
    assert "--shift_trans_type none" in bad(contrast_main.main, [*contrast, "--mode", "senmatic",
                                                                 "--shift_trans_type", "rotation"], capsys)
    assert "--optimizer sgd" in bad(contrast_main.main, [*contrast, "--mode", "feature", "--optimizer", "lars"], capsys)
    assert "senmatic" in bad(contrast_main.main, [*contrast], capsys)
    assert "--resume_path" in bad(contrast_main.main, [*TINY, "--mode", "feature", "--epoch", "1", "--logdir",
                                                       str(encoders / "distinctive")], capsys)
    assert "different settings (batch_size)" in bad(contrast_main.main, [
        *TINY, "--mode", "feature", "--epoch", "1", "--batch_size", "16", "--logdir", str(encoders / "distinctive"),
        "--resume_path", str(encoders / "distinctive")], capsys)
    assert not os.path.exists(logdir)
    out = tmp_path / "run"
    missing = bad(active_main.main, active_args(encoders, out, "--load_feature_path", str(tmp_path / "none.model")),
                  capsys)
    assert "contrast_main.py --mode feature" in missing
    swapped = active_args(encoders, out, "--load_feature_path", str(encoders / "semantic" / "last.model"))
    assert "pass the distinctive one" in bad(active_main.main, swapped, capsys)
    assert "raise --split" in bad(active_main.main, active_args(encoders, out, "--cycles", "5"), capsys)
    assert "--mode eval" in bad(active_main.main, active_args(encoders, out, "--mode", "simclr"), capsys)
    assert not os.path.exists(out)
