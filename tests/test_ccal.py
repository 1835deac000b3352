"""CCAL (contrast_main.py, active_main.py): NT-Xent and its cross-rank gather, the augmentations
and schedule, the mismatch pool, the joint query (the selector CCAL), the settings of both scripts,
end-to-end runs on digits and on an image folder, resume, bad input."""

import json
import math
import os
import shlex
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ROOT, run_script, write_images

import active_main
import contrast_main
from config import tree
from models.csi import CSIResNet
from utils.core import distributed
from utils.core.cli import run_cli
from utils.core.config import resolve
from utils.core.data import TensorImages, build_data
from utils.core.errors import UserError
from utils.core.openset import CCAL_KNOWN, mismatch_pool
from utils.core.results import read_cycles
from utils.methods.contrastive import SimCLRAugment, hflip, nt_xent, rotate, training_views, warmup_schedule
from utils.protocols import ccal
from utils.protocols.ccal import ccal_pool, contrast_set, even_batches, make_augment, query_features
from utils.samplers import QueryContext, get_strategy
from utils.samplers.ccal import (
    ccal_query,
    distinctive_scores,
    feature_rows,
    joint_selection,
    semantic_scores,
)
from utils.samplers.registry import Need

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(*assignments, script="active_main.py"):
    """The resolved settings of ``script`` with ``--set`` ``assignments``."""
    return resolve(tree(script), {}, list(assignments))


CFG = settings()  # the augmentation keys (the same defaults in both trees)
TINY = ["--dataset", "digits", "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8", "--quiet"]
NO_WARMUP = ["--warmup", "0"]  # a 1- or 2-epoch contrastive run: WARMUP must be below EPOCHS


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


@pytest.mark.slow
@pytest.mark.distributed
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
    pool = ccal_pool(settings("KNOWN_CLASSES=2,5", "MISMATCH=0.5"), data)
    assert len(pool.labeled_idx) == 16 and pool.known_classes.tolist() == [2, 5]  # 8 % of the 200 known images
    assert len(pool.pool_idx) == 184 + 184

    for known, budget, message in (("2,2", None, "distinct"), (None, None, "--known-classes 0,1"),
                                   ("2,5", 1, "fewer than 2"), ("2,5", 500, "lower --initial-budget"),
                                   ("2,10", None, "distinct classes in 0..9")):
        with pytest.raises(UserError, match=message):
            ccal_pool(settings(f"KNOWN_CLASSES={known}", f"INITIAL_BUDGET={budget}", "MISMATCH=0.5"), data)


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
                            *NO_WARMUP, "--logdir", str(folder / name)])
    return folder


def active_args(encoders, out, *extra):
    return [*TINY, "--mode", "eval", "--k", "100.0", "--t", "0.9", "--model", "resnet18", "--mismatch", "0.8",
            "--target", "4", "--shift_trans_type", "rotation", "--ood_samples", "2", "--resize_factor", "0.54",
            "--resize_fix", "--load_feature_path", str(encoders / "distinctive" / "last.model"),
            "--load_senmatic_path", str(encoders / "semantic" / "last.model"), "--load_path", str(encoders),
            "--split", "2", "--epochs", "1", "--set", "CLASSIFIER_SEEDS=2", "--out", str(out), *extra]


@pytest.mark.slow
@pytest.mark.distributed
def test_seed_contrast_command_under_the_old_launcher_writes_one_encoder(tmp_path):
    result = ok(run_script("-m", "torch.distributed.launch", "--nproc_per_node=2", "--master_port",
                           str(29600 + os.getpid() % 1000), os.path.join(ROOT, "contrast_main.py"), "--mismatch", "0.8",
                           "--dataset", "digits", "--model", "resnet18", "--mode", "feature", "--shift_trans_type",
                           "rotation", "--batch_size", "16", "--epoch", "1", "--logdir", "./model/distinctive",
                           "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8",
                           *NO_WARMUP, "--device", "cpu", cwd=str(tmp_path)))
    assert "2 process(es) on cpu" in result.stdout and result.stdout.count("[epoch 1/1]") == 1
    folder = tmp_path / "model" / "distinctive"
    assert sorted(os.listdir(folder)) == [".lock", "last.config", "last.model", "last.optim", "tb"]
    model = CSIResNet.from_state_dict(torch.load(folder / "last.model", weights_only=True), "x")
    assert model.shift_cls_layer.out_features == 4 and model.stem[0].in_channels == 1


@pytest.mark.slow
def test_active_main_queries_trains_and_records_each_cycle(encoders, tmp_path, capsys):
    out = tmp_path / "run"
    active_main.main(active_args(encoders, out, "--print_score", "--save-models"))
    assert "pseudo-labelled per known class" in capsys.readouterr().out
    assert sorted(os.listdir(out / "models")) == [f"trial0_cycle{c}_seed{s}.pt" for c in range(3) for s in range(2)]
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
    saved = json.load(open(out / "config.json"))
    assert saved["settings"]["TARGET"] == 4 and saved["settings"]["CLASSIFIER_EPOCHS"] == 1
    assert saved["derived"]["initial_budget"] == 6 and saved["derived"]["known_classes"] == [0, 1]


@pytest.mark.slow
def test_active_main_resume_reproduces_the_run(encoders, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    active_main.main(active_args(encoders, full, "--device", "cpu"))
    active_main.main(active_args(encoders, resumed, "--cycles", "1", "--device", "cpu"))
    active_main.main(active_args(encoders, resumed, "--resume", "--device", "cpu"))
    strip = [(r["cycle"], r["n_labeled"], r["test_acc"], r["n_queried_known"]) for r in read_cycles(str(full))]
    assert strip == [(r["cycle"], r["n_labeled"], r["test_acc"], r["n_queried_known"])
                     for r in read_cycles(str(resumed))]
    for c in range(3):
        assert np.array_equal(np.load(full / "labeled" / f"trial0_cycle{c}.npy"),
                              np.load(resumed / "labeled" / f"trial0_cycle{c}.npy"))


@pytest.mark.slow
def test_contrast_resume_after_a_crash_reproduces_the_weights(tmp_path, monkeypatch):
    common = [*TINY, "--mode", "feature", "--batch_size", "64", "--epoch", "2", "--save_step", "1", *NO_WARMUP,
              "--device", "cpu"]
    contrast_main.main([*common, "--logdir", str(tmp_path / "full")])
    real_save = ccal.save_encoder

    def save_then_crash(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(ccal, "save_encoder", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        contrast_main.main([*common, "--logdir", str(tmp_path / "cut")])
    monkeypatch.setattr(ccal, "save_encoder", real_save)
    assert torch.load(tmp_path / "cut" / "last.config", weights_only=True)["epoch"] == 1
    contrast_main.main([*common, "--logdir", str(tmp_path / "cut"), "--resume_path", str(tmp_path / "cut")])
    full = torch.load(tmp_path / "full" / "last.model", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.model", weights_only=True)
    assert all(torch.equal(full[k], cut[k]) for k in full)


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_writes_nothing(encoders, tmp_path, capsys):
    logdir = str(tmp_path / "enc")
    contrast = [*TINY, "--epoch", "1", *NO_WARMUP, "--logdir", logdir]
    no_known = ["--dataset", "digits", "--mode", "feature", "--logdir", logdir]
    assert "--known-classes" in bad(contrast_main.main, no_known, capsys)
    assert "--mismatch" in bad(contrast_main.main, [*contrast, "--mode", "feature", "--mismatch", "1.5"], capsys)
    assert "--shift_trans_type none" in bad(contrast_main.main, [*contrast, "--mode", "senmatic",
                                                                 "--shift_trans_type", "rotation"], capsys)
    assert "--optimizer sgd" in bad(contrast_main.main, [*contrast, "--mode", "feature", "--optimizer", "lars"], capsys)
    assert "senmatic" in bad(contrast_main.main, [*contrast], capsys)
    assert "--resume_path" in bad(contrast_main.main, [*TINY, "--mode", "feature", "--epoch", "1", *NO_WARMUP,
                                                       "--logdir", str(encoders / "distinctive")], capsys)
    assert "different settings (BATCH_SIZE)" in bad(contrast_main.main, [
        *TINY, "--mode", "feature", "--epoch", "1", *NO_WARMUP, "--batch_size", "16", "--logdir",
        str(encoders / "distinctive"), "--resume_path", str(encoders / "distinctive")], capsys)
    assert not os.path.exists(logdir)
    out = tmp_path / "run"
    missing = bad(active_main.main, active_args(encoders, out, "--load_feature_path", str(tmp_path / "none.model")),
                  capsys)
    assert "contrast_main.py --mode feature" in missing
    swapped = active_args(encoders, out, "--load_feature_path", str(encoders / "semantic" / "last.model"))
    assert "pass the distinctive one" in bad(active_main.main, swapped, capsys)
    assert "raise --split" in bad(active_main.main, active_args(encoders, out, "--cycles", "5"), capsys)
    assert "--mode eval" in bad(active_main.main, active_args(encoders, out, "--mode", "simclr"), capsys)
    other_pool = bad(active_main.main, active_args(encoders, out, "--mismatch", "0.4"), capsys)
    assert "was trained on another pool (MISMATCH 0.8 there, 0.4 here)" in other_pool
    assert not os.path.exists(out)


# ----------------------------------------------------------------------------- QUERY_ROTATIONS

def seed_query_features(distinctive, semantic, x, augment, copies, seed, block):
    """The query features as computed before QUERY_ROTATIONS worked (always the 4 rotations), for
    one block of images (one process)."""
    dis, sem = 0.0, 0.0
    for copy_id in range(copies):
        state = np.random.SeedSequence([seed, copy_id, block]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        rows, _ = rotate(hflip(x, generator), 4)
        rows = augment(rows, augment.sample(len(rows), generator, "cpu"))
        dis = dis + distinctive(rows).simclr.view(4, len(x), -1).transpose(0, 1)
        sem = sem + semantic(rows[: len(x)]).simclr
    return dis / copies, sem / copies


class PixelEncoder(torch.nn.Module):
    """A fixed random projection of the pixels: an encoder whose features tell images and rotations
    apart (a randomly initialised ResNet maps every image to nearly the same direction)."""

    def __init__(self, pixels, dim, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.simclr_layer = torch.nn.Sequential(torch.nn.Linear(pixels, dim))

    def forward(self, x):
        return SimpleNamespace(simclr=self.simclr_layer((x - 0.5).flatten(1)))


@torch.no_grad()
def test_query_rotations_choose_the_rotations_of_the_distinctive_score():
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = SimpleNamespace(train=TensorImages(images, np.zeros(12)))
    distinctive, semantic = PixelEncoder(3 * 16 * 16, 8, 0), PixelEncoder(3 * 16 * 16, 8, 1)
    augment = make_augment(CFG, 0.54, True)
    features = {r: query_features(distinctive, semantic, data, np.arange(12), augment, 3, 7, 5, distributed.Dist(),
                                  rotations=r) for r in (1, 2, 4)}
    # 4 rotations (the default, the seed's) reproduce the features computed before QUERY_ROTATIONS worked
    for start in range(0, 12, 5):
        block = slice(start, start + 5)
        seed_dis, seed_sem = seed_query_features(distinctive, semantic, images[block].float() / 255, augment, 3, 7,
                                                 start // 5)
        assert torch.allclose(features[4][0][block], seed_dis, atol=1e-6)
        assert torch.allclose(features[4][1][block], seed_sem, atol=1e-6)
    for r in (1, 2):  # rotation r's views do not depend on how many rotations are used
        assert features[r][0].shape == (12, r, 8)
        assert torch.allclose(features[r][0], features[4][0][:, :r], atol=1e-5)
        assert torch.allclose(features[r][1], features[4][1], atol=1e-5)
    scores = {r: distinctive_scores(features[r][0][3:], features[r][0][:3]) for r in (1, 2, 4)}
    assert (scores[1] - scores[4]).abs().max() > 0.05 and (scores[2] - scores[4]).abs().max() > 0.05
    assert settings("QUERY_ROTATIONS=2").QUERY_ROTATIONS == 2
    with pytest.raises(UserError, match="QUERY_ROTATIONS expects one of 1, 2, 3, 4"):
        settings("QUERY_ROTATIONS=5")


# ----------------------------------------------------------------------------- the selector CCAL

def test_the_ccal_selector_is_registered_and_queries_what_ccal_query_queries():
    strategy = get_strategy("ccal", serves={Need.CCAL_FEATURES}, where="active_main.py")
    assert strategy.name == "CCAL" and not strategy.fixed_size
    with pytest.raises(UserError, match="strategy CCAL needs CCAL's encoder features"):
        get_strategy("CCAL", serves=(), where="main_al.py")
    generator = torch.Generator().manual_seed(0)
    feature_idx = np.arange(0, 400, 2)
    features = (torch.randn(200, 4, 16, generator=generator), torch.randn(200, 16, generator=generator))
    labeled, labels = feature_idx[:12], np.array([0, 1, 2] * 4)
    pool = np.setdiff1d(feature_idx, np.concatenate([labeled, feature_idx[100:150]]))
    expected, _ = ccal_query(features, feature_idx, pool, labeled, labels, 3, 100.0, 0.9, 7)
    extras = {"features": features, "positions": feature_rows(feature_idx, 400), "labels": labels, "k": 100.0,
              "t": 0.9, "target": 7}
    ctx = QueryContext(None, SimpleNamespace(num_classes=3), labeled, pool, 21, distributed.Dist(), extras=extras)
    assert np.array_equal(strategy.select(ctx), expected) and len(expected) == 21
    empty = QueryContext(None, SimpleNamespace(num_classes=3), labeled, pool[:0], 0, distributed.Dist(), extras=extras)
    assert len(strategy.select(empty)) == 0


# ----------------------------------------------------------------------------- settings of both scripts

ENTRY = {"contrast_main.py": (contrast_main, ["--mode", "feature"], "--logdir", "TARGET", "active_main.py"),
         "active_main.py": (active_main, [], "--out", "SAVE_STEP", "contrast_main.py")}


def exit_code(main, argv, capsys):
    """(exit code, stdout, stderr) of ``main(argv)`` under run_cli."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
        raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err.strip()


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_a_bad_set_is_one_line_exit_2_and_creates_no_folder(script, tmp_path, capsys, monkeypatch):
    module, argv, folder_flag, other, owner = ENTRY[script]
    monkeypatch.chdir(tmp_path)  # default folders (./model/..., results/) would appear here
    argv = [*TINY, *argv, folder_flag, str(tmp_path / "run")]
    for assignment, message in (("FOO=1", f"{script} has no setting FOO"), ("SEED=fast", "SEED expects an integer"),
                                ("MISMATCH=[1,2]", "MISMATCH expects a number"),
                                (f"{other}=5", f"{other} is a setting of {owner}, not of {script}")):
        code, _, err = exit_code(module.main, [*argv, "--set", assignment], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (assignment, err)
        assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_list_settings_prints_every_key_and_exits_0(script, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module, key = ENTRY[script][0], "TEMPERATURE" if script == "contrast_main.py" else "TARGET"
    code, out, _ = exit_code(module.main, ["--list-settings", "--set", f"{key}=7"], capsys)
    assert code == 0 and out.startswith(f"{script}: {len(tree(script).keys)} settings")
    lines = {line.split("=")[0].strip(): line for line in out.splitlines()[1:]}
    assert set(lines) == set(tree(script).keys) and os.listdir(tmp_path) == []
    for name, key_def in tree(script).keys.items():
        assert f"# {key_def.help}" in lines[name]
    assert "(--set " + key + ")" in lines[key] and lines[key].split("=")[1].split("#")[0].strip() in ("7", "7.0")
    code, out, _ = exit_code(module.main, ["--help"], capsys)
    assert code == 0 and "--list-settings" in out


def test_epochs_and_the_seed_readme_spelling_epoch_both_set_the_epochs():
    for flag in ("--epochs", "--epoch"):
        _, cfg = contrast_main.parse_args(["--mode", "feature", flag, "700"])
        assert cfg.EPOCHS == 700 and cfg.sources["EPOCHS"] == flag and cfg.WARMUP == 10  # the warm-up is not scaled
        _, cfg = active_main.parse_args([flag, "7"])
        assert cfg.CLASSIFIER_EPOCHS == 7 and cfg.sources["CLASSIFIER_EPOCHS"] == flag
    with pytest.raises(UserError, match="--epochs and --epoch both set EPOCHS"):
        contrast_main.parse_args(["--mode", "feature", "--epochs", "700", "--epoch", "700"])


def readme_ccal_commands():
    """The seed's commands of README.md's CCAL section: (script, its arguments)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## CCAL: the seed's commands"):]
    section = section[: section.index("\n## ", 1)]
    commands = []
    for line in section.splitlines():
        words = shlex.split(line) if line.startswith("python") else []
        for i, word in enumerate(words):
            if word in ("contrast_main.py", "active_main.py"):
                commands.append((word, words[i + 1:]))
    return commands


def test_the_seed_commands_of_the_readme_parse_to_the_seed_settings(capsys):
    commands = readme_ccal_commands()
    assert [script for script, _ in commands] == ["contrast_main.py", "contrast_main.py", "active_main.py"]
    (_, semantic_argv), (_, distinctive_argv), (_, active_argv) = commands
    args, semantic = contrast_main.parse_args(semantic_argv)
    assert (semantic.MODE, semantic.SHIFT_TRANS_TYPE, semantic.EPOCHS, semantic.BATCH_SIZE, semantic.MISMATCH,
            semantic.DATASET, semantic.MODEL, args.logdir) == ("senmatic", "none", 700, 32, 0.8, "cifar10", "resnet18",
                                                               "./model/semantic")
    _, distinctive = contrast_main.parse_args(distinctive_argv)
    assert (distinctive.MODE, distinctive.SHIFT_TRANS_TYPE, distinctive.EPOCHS) == ("feature", "rotation", 700)
    args, active = active_main.parse_args(active_argv)
    assert (active.K, active.T, active.TARGET, active.QUERY_OOD_SAMPLES, active.QUERY_RESIZE_FACTOR, active.MISMATCH,
            active.QUERY_ROTATIONS) == (100.0, 0.9, 1500, 10, 0.54, 0.8, 4)
    assert args.print_score and args.load_feature_path == "./model/distinctive/last.model"
    out = capsys.readouterr().out
    assert "notice: --load_path is accepted and changes nothing" in out
    assert "notice: --shift_trans_type is accepted and changes nothing" in out


def test_seed_flags_map_onto_the_settings_and_bad_ones_stop_with_one_line():
    _, cfg = contrast_main.parse_args(["--mode", "semantic"])  # our alias of the seed's senmatic
    assert (cfg.MODE, cfg.SHIFT_TRANS_TYPE) == ("senmatic", "none") and cfg.sources["SHIFT_TRANS_TYPE"] == \
        "--mode senmatic"
    _, cfg = contrast_main.parse_args(["--mode", "distinctive", "--lr_scheduler", "step_decay", "--resize_fix",
                                       "--one_class_idx", "3", "--target", "5"])
    assert (cfg.MODE, cfg.SHIFT_TRANS_TYPE, cfg.LR_SCHEDULER, cfg.RESIZE_FIX) == ("feature", "rotation", "step_decay",
                                                                                  True)
    for argv, message in ((["--optimizer", "lars"], "--optimizer lars is not available (the seed raises too); use "
                                                    "--optimizer sgd"),
                          (["--model", "resnet18_imagenet"], "MODEL expects one of resnet18"),
                          (["--mode", "simclr"], "MODE expects one of senmatic, feature"),
                          (["--epochs", "10"], "lower --warmup (e.g. --warmup 0) or raise --epochs"),
                          (["--resize_factor", "0"], "--resize_factor 0: RESIZE_FACTOR expects a number in (0, 1]"),
                          (["--temperature", "0"], "--temperature 0: TEMPERATURE expects a number > 0"),
                          (["--mismatch", "1"], "--mismatch 1: MISMATCH expects a number in [0, 1)")):
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            contrast_main.parse_args(["--mode", "feature", *argv])
    assert contrast_main.parse_args(["--mode", "feature", "--epochs", "11"])[1].WARMUP == 10
    for argv, message in ((["--mode", "train"], "--mode: active_main.py only runs --mode eval"),
                          (["--cycles", "7"], "raise --split"), (["--split", "0"], "SPLIT expects an integer >= 1")):
        with pytest.raises(UserError, match=message):
            active_main.parse_args(argv)
    _, cfg = active_main.parse_args(["--mode", "eval", "--split", "3", "--cycles", "2", "--batch_size", "8"])
    assert (cfg.SPLIT, cfg.CYCLES) == (3, 2) and "BATCH_SIZE" not in cfg


def test_step_decay_drops_the_lr_after_half_and_three_quarters_of_the_epochs_past_the_warm_up():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = warmup_schedule(optimizer, epochs=8, steps_per_epoch=2, warmup=2, multiplier=10, kind="step_decay")
    lrs = []
    for _ in range(2 * 10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.1, 0.325, 0.55, 0.775] + [1.0] * 8 + [0.1] * 4 + [0.01] * 4  # drops at 2 + 4 and 2 + 6 epochs
    assert lrs == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("optimizer,gamma", [("sgd", 0.1), ("adam", 0.3)])
def test_step_decay_drops_by_csis_factor_of_the_optimizer(tmp_path, monkeypatch, optimizer, gamma):
    class Built(Exception):
        pass

    def stop(*args):
        raise Built(args[-1])

    monkeypatch.setattr(contrast_main, "warmup_schedule", stop)
    with pytest.raises(Built) as built:
        contrast_main.main([*TINY, *NO_WARMUP, "--mode", "senmatic", "--optimizer", optimizer, "--lr_scheduler",
                            "step_decay", "--epochs", "1", "--logdir", str(tmp_path / "enc")])
    assert built.value.args[0] == gamma
    torch_optimizer = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = warmup_schedule(torch_optimizer, epochs=4, steps_per_epoch=1, warmup=0, multiplier=10,
                                kind="step_decay", gamma=gamma)
    lrs = []
    for _ in range(4):
        lrs.append(torch_optimizer.param_groups[0]["lr"])
        torch_optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 1.0, gamma, gamma**2])


def test_hue_shift_is_csis_factor_times_255_over_360():
    """A pure-red image shifted by the largest factor 0.1 moves 0.1 x 255/360 = 0.0708 round the
    colour circle, as CSI's ColorJitterLayer (not 0.1)."""
    from utils.methods.contrastive import rgb_to_hsv

    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    jitter = SimCLRAugment({"p": 1.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.1}, 0.0,
                           scale=(1.0, 1.0), ratio=(1.0, 1.0))
    params = jitter.sample(1, torch.Generator().manual_seed(0), "cpu")
    params["hue"] = torch.tensor([0.1])
    hue = rgb_to_hsv(jitter(red, params))[0, 0]
    assert torch.allclose(hue, torch.full_like(hue, 0.1 * 255 / 360), atol=1e-4)


# ----------------------------------------------------------------------------- IMAGE_SIZE on an image folder

@pytest.mark.slow
def test_image_size_sets_the_images_the_encoders_and_the_classifier_see(tmp_path):
    for part, n in (("train", 12), ("test", 4)):
        for c in ("a", "b", "c"):
            write_images(tmp_path / "images" / part / c, n, (40, 30), seed=ord(c))
    common = ["--dataset", f"folder:{tmp_path / 'images'}", "--known-classes", "0,1", "--initial-budget", "8",
              "--mismatch", "0.4", "--set", "IMAGE_SIZE=24", "--set", "WIDTH=4", "--quiet"]
    for mode, name in (("senmatic", "semantic"), ("feature", "distinctive")):
        contrast_main.main([*common, "--mode", mode, "--batch_size", "8", "--epoch", "1", *NO_WARMUP, "--logdir",
                            str(tmp_path / name)])
        record = torch.load(tmp_path / name / "last.config", weights_only=True)
        assert record["image_shape"] == [3, 24, 24] and record["settings"]["IMAGE_SIZE"] == 24
    out = tmp_path / "run"
    active_main.main([*common, "--target", "2", "--split", "1", "--epochs", "1", "--ood_samples", "1", "--set",
                      "CLASSIFIER_SEEDS=1", "--load_feature_path", str(tmp_path / "distinctive" / "last.model"),
                      "--load_senmatic_path", str(tmp_path / "semantic" / "last.model"), "--out", str(out)])
    saved = json.load(open(out / "config.json"))
    assert saved["run"]["image_shape"] == [3, 24, 24] and saved["settings"]["IMAGE_SIZE"] == 24
    assert [r["n_queried"] for r in read_cycles(str(out))] == [4, 0]


@pytest.mark.parametrize("frozen,modes", [(False, [True, True, True]), (True, [True, False, False])])
def test_classifier_frozen_bn_trains_after_the_first_epoch_in_eval_mode_as_the_seed(monkeypatch, frozen, modes):
    seen = []

    def fit(loader, epochs, step, run, desc, optimizer=None, epoch_start=None):
        for epoch in range(epochs):
            epoch_start(epoch)
            seen.append(net_of[0].training)

    net_of = []
    monkeypatch.setattr(active_main, "fit", fit)
    monkeypatch.setattr(active_main, "evaluate", lambda *args: 0.0)
    real_wrap = distributed.wrap
    monkeypatch.setattr(distributed, "wrap", lambda model, dist: net_of.append(real_wrap(model, dist)) or net_of[0])
    data = build_data("digits", max_train_samples=40)
    cfg = settings("CLASSIFIER_EPOCHS=3", f"CLASSIFIER_FROZEN_BN={frozen}", "CLASSIFIER_BATCH=8")
    active_main.train_classifier(data, np.arange(16), 0, cfg, SimpleNamespace(workers=0), distributed.Dist(), None, "c")
    assert seen == modes
