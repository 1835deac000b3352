"""Rethinking deep AL (main_al.py --protocol rethinking): label propagation, jLP, CEAL,
DeepCluster, split files, the LR schedule, and smoke runs of every flag combination."""

import math
import os

import numpy as np
import pytest
import torch
from conftest import make_cifar
from torch import nn

import main_al
from models import ModelOutput, build_model
from utils.core.cli import UserError, run_cli
from utils.core.data import BatchTransform, ImageData, TensorImages
from utils.core.distributed import Dist
from utils.core.results import read_config, read_cycles
from utils.core.splits import make_split, read_split, split_path, write_split
from utils.methods.deepcluster import cluster_assignments, load_trunk, save_trunk, uniform_over_clusters
from utils.methods.label_propagation import jlp_select, knn_graph, propagate, pseudo_labels
from utils.protocols.pool import Trial
from utils.protocols.rethinking import Rethinking, rethinking_lr


def two_clusters(n=30, seed=0):
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0.0, 0.0]) + rng.normal(0, 0.05, (n, 3))
    b = np.array([0.0, 1.0, 0.0]) + rng.normal(0, 0.05, (n, 3))
    return np.concatenate([a, b]).astype(np.float32)


def test_label_propagation_labels_two_separated_clusters_from_one_label_each():
    features = two_clusters()
    graph = knn_graph(features, k=10)
    assert graph.shape == (60, 60) and abs(graph - graph.T).max() < 1e-12 and graph.diagonal().sum() == 0
    labels, weights = pseudo_labels(propagate(graph, [3, 45], [0, 1], num_classes=2))
    assert labels.tolist() == [0] * 30 + [1] * 30
    assert weights.max() == pytest.approx(1.0) and (weights > 0).all()


def test_certainty_of_a_one_hot_row_is_one_and_of_a_uniform_row_zero():
    labels, weights = pseudo_labels(np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 3.0, 1.0], [0.0, 0.0, 0.0]]))
    assert labels[:3].tolist() == [0, 0, 1]
    assert weights[0] == pytest.approx(1.0) and weights[1] == pytest.approx(0.0) and weights[3] == 0.0
    assert 0 < weights[2] < 1  # negative scores are clamped before normalising


def test_jlp_picks_the_point_least_reached_from_the_labeled_set():
    angles = np.linspace(0, 1.5, 20)  # a chain of points on an arc: graph distance = position
    features = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    graph = knn_graph(features, k=2)
    assert jlp_select(graph, [0], 1).tolist() == [19]
    picks = jlp_select(graph, [0], 3)
    assert picks[0] == 19 and 6 <= picks[1] <= 13  # then the middle of the gap, far from both ends
    assert jlp_select(graph, [19], 1).tolist() == [0]


def test_deepcluster_separates_blobs_and_samples_clusters_uniformly(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 16))
    features = np.concatenate([c + rng.normal(0, 0.5, (40, 16)) for c in centres])
    labels = cluster_assignments(features, 5, seed=0)
    assert [len(set(labels[i * 40:(i + 1) * 40])) for i in range(5)] == [1] * 5 and len(set(labels)) == 5
    skewed = np.array([0] * 90 + [1] * 10)
    drawn = uniform_over_clusters(skewed, 100, rng)
    assert np.bincount(skewed[drawn]).tolist() == [50, 50]
    model = build_model("lenet", 10, 1)
    path = str(tmp_path / "pre.pt")
    save_trunk(model, path)
    other = build_model("lenet", 10, 1)
    load_trunk(other, path)
    assert torch.equal(other.conv1.weight, model.conv1.weight) and not torch.equal(other.fc2.weight, model.fc2.weight)
    with pytest.raises(UserError, match="--learn-unsupervised-pretraining"):
        load_trunk(other, str(tmp_path / "missing.pt"))
    with pytest.raises(UserError, match="do not fit"):
        load_trunk(build_model("cifar_cnn", 10, 1), path)


def test_split_files_are_balanced_reproducible_and_checked(tmp_path):
    targets = np.repeat(np.arange(10), 50)
    split = make_split(targets, np.arange(500), 100, split=3)
    assert np.array_equal(split, make_split(targets, np.arange(500), 100, split=3))
    assert not np.array_equal(split, make_split(targets, np.arange(500), 100, split=4))
    assert np.bincount(targets[split]).tolist() == [10] * 10
    path = split_path(str(tmp_path), "cifar10", 100, 3)
    assert path.endswith(os.path.join("labels", "cifar10", "100_balanced_labels", "03.txt"))
    write_split(path, split, targets)
    assert np.array_equal(read_split(path, 500), split)
    assert open(path).readline().split()[1] == str(targets[split[0]])
    with pytest.raises(UserError, match="does not fit"):
        read_split(path, 100)


def test_learning_rate_ramps_up_then_follows_the_cosine():
    _, cfg = main_al.parse_args(["--al-method", "random"])
    assert rethinking_lr(cfg, 0) == pytest.approx(0.2)
    assert rethinking_lr(cfg, 105) == pytest.approx(0.1)
    assert rethinking_lr(cfg, 200) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 200 / 210)))
    _, ramp = main_al.parse_args(["--al-method", "random", "--lr-rampup", "10", "--initial-lr", "0.1"])
    assert rethinking_lr(ramp, 5) == pytest.approx(0.15 * 0.5 * (1 + math.cos(math.pi * 5 / 210)))


def test_epochs_scale_the_cosine_horizon_unless_it_is_given():
    _, short = main_al.parse_args(["--al-method", "random", "--epochs", "20"])
    assert short.LR_RAMPDOWN_EPOCHS == 21 and short.LL_DETACH_EPOCH == 12  # 210 and 120 of 200 epochs
    assert rethinking_lr(short, 20) == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 20 / 21)))
    assert short.scaled["LR_RAMPDOWN_EPOCHS"] == {"from": 210, "to": 21, "key": "EPOCHS", "base": 200, "epochs": 20}
    _, kept = main_al.parse_args(["--al-method", "random", "--epochs", "20", "--lr-rampdown-epochs", "300"])
    assert kept.LR_RAMPDOWN_EPOCHS == 300 and "LR_RAMPDOWN_EPOCHS" not in kept.scaled


def test_ceal_adds_exactly_the_confident_unlabeled_samples():
    class Fixed(nn.Module):
        def forward(self, x):
            return ModelOutput(x.flatten(1) * 40.0, x.flatten(1))  # pixel values as logits

    images = torch.tensor([[255, 0], [130, 125], [255, 0], [0, 255]], dtype=torch.uint8).view(4, 1, 1, 2)
    data = ImageData("tiny", TensorImages(images, [0, 0, 0, 1]), None, 2, 1, 1, BatchTransform((0.0,), (1.0,)),
                     BatchTransform((0.0,), (1.0,)), np.arange(4), np.arange(0))
    def confident(flags, pool_idx, cycle):
        args, cfg = main_al.parse_args(["--al-method", "random", "--add-ceal", "True", *flags])
        protocol = Rethinking(cfg, args)
        protocol.bind(data, Dist(), None)
        state = Trial(np.array([0]))
        protocol.after_query(None, 0, cycle, Fixed(), state, np.asarray(pool_idx), np.empty(0, dtype=np.int64))
        return state.pseudo_idx.tolist(), state.pseudo_labels.tolist()

    assert confident([], [1, 2, 3], 0) == ([2, 3], [0, 1])  # sample 1 is nearly 50/50
    assert confident(["--ceal-th", str(0.00033 * 5)], [2], 5) == ([], [])  # the threshold falls 0.00033 per cycle


SMALL = ["--dataset", "digits", "--arch", "lenet", "--split", "0", "--al-budget", "20", "--epochs", "2", "--cycles",
         "2", "--max-train-samples", "300", "--max-test-samples", "100", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--al-method", "uncertainty_entropy"],
    ["--al-method", "coreset", "--add-lp", "True", "--b", "128", "--labeled-batch-size", "50"],
    ["--al-method", "jlp", "--add-ceal", "True", "--ceal-th", "0.9"],
    ["--al-method", "random", "--learn-unsupervised-pretraining", "True", "--pretrain-epochs", "2",
     "--add-lp", "True", "--b", "64", "--lp-mode", "uniform"],
    ["--al-method", "BadgeSampling", "--finetuning", "True", "--lp-mode", "full"],
])
def test_every_flag_combination_runs_on_digits(tmp_path, flags):
    out = str(tmp_path / "run")
    main_al.main([*SMALL, *flags, "--data-root", str(tmp_path / "data"), "--pretrained-dir", str(tmp_path / "pre"),
                  "--out", out])
    assert [r["n_labeled"] for r in read_cycles(out)] == [20, 40]
    final = np.load(f"{out}/labeled/trial0_cycle1.npy")
    assert len(set(final.tolist())) == 60 and set(final.tolist()) <= set(range(1437))
    assert os.path.isfile(split_path(str(tmp_path / "data"), "digits", 20, 0))


@pytest.mark.slow
def test_pretrained_weights_are_loaded_and_missing_ones_explained(tmp_path, capsys):
    common = [*SMALL, "--al-method", "random", "--pretrained-dir", str(tmp_path / "pre"),
              "--data-root", str(tmp_path / "data")]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main([*common, "--add-unsupervised-pretraining", "True", "--out", str(tmp_path / "a")]))
    assert exit_info.value.code == 2 and "--learn-unsupervised-pretraining" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a")
    main_al.main([*common, "--learn-unsupervised-pretraining", "True", "--pretrain-epochs", "1", "--out",
                  str(tmp_path / "b")])
    main_al.main([*common, "--add-unsupervised-pretraining", "True", "--out", str(tmp_path / "c")])
    assert read_config(str(tmp_path / "c"))["label"].endswith("RandomSampling+PRE")


@pytest.mark.slow
def test_resume_reproduces_the_rethinking_run(tmp_path):
    common = [*SMALL, "--al-method", "uncertainty_entropy", "--add-ceal", "True", "--ceal-th", "0.9",
              "--data-root", str(tmp_path / "data")]
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    main_al.main([*common, "--cycles", "3", "--out", full])
    main_al.main([*common, "--cycles", "1", "--out", resumed])
    main_al.main([*common, "--cycles", "3", "--out", resumed, "--resume", "True"])
    for cycle in range(3):
        assert np.array_equal(np.load(f"{full}/labeled/trial0_cycle{cycle}.npy"),
                              np.load(f"{resumed}/labeled/trial0_cycle{cycle}.npy"))


def test_make_splits_writes_one_file_per_split(tmp_path, capsys):
    main_al.main(["--make-splits", "--dataset", "digits", "--nr-splits", "3", "--split-size", "50",
                  "--data-root", str(tmp_path)])
    written = capsys.readouterr().out.split()
    assert len(written) == 3 and all(os.path.isfile(p) for p in written)
    assert [len(open(p).readlines()) for p in written] == [50, 50, 50]


@pytest.mark.slow
def test_the_seed_command_runs_verbatim_on_cifar10_files(tmp_path):
    root = make_cifar(str(tmp_path / "data"), n_train=300, n_test=20)
    out = str(tmp_path / "run")
    main_al.main(["--dataset", "cifar10", "--al-method", "uncertainty_entropy", "--split", "0", "--al-budget", "100",
                  "--data-root", root, "--out", out, "--epochs", "1", "--cycles", "1", "--quiet"])
    assert [r["n_labeled"] for r in read_cycles(out)] == [100]
    assert read_config(out)["settings"]["ARCH"] == "cifar_cnn"


@pytest.mark.parametrize("flags,message", [
    (["--al-method", "random", "--add-lp", "True", "--add-ceal", "True"], "cannot be combined"),
    (["--al-method", "nothing"], "choose from"),
    (["--al-method", "random", "--arch", "vgg"], "ARCH expects one of cifar_cnn"),
    (["--al-method", "random", "--use_val_set", "True"], "not supported"),
    (["--al-method", "Ensembles"], "does not provide"),
    (["--al-method", "random", "--al-budget", "500"], "budget larger than the pool"),
    ([], "--al-method is required"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main([*SMALL, *flags, "--out", str(tmp_path / "run")]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_tod_compares_with_the_previous_cycles_model_under_the_rethinking_protocol(tmp_path):
    """TOD's scores are the discrepancy with the previous cycle's model (an untrained one at cycle 0):
    with the current model in its place every score would be 0 and the query the lowest pool indices."""
    from utils.core.data import build_data

    out = str(tmp_path / "run")
    main_al.main([*SMALL, "--al-method", "TOD", "--cycles", "3", "--data-root", str(tmp_path / "data"), "--out", out])
    train_idx = build_data("digits", max_train_samples=300, seed=7).train_idx  # SMALL's pool (--seed 7)
    labeled = [np.load(f"{out}/labeled/trial0_cycle{c}.npy") for c in range(3)]
    before = labeled[0][:20]  # the split file
    for cycle in range(3):
        queried = labeled[cycle][len(before):]
        lowest = np.setdiff1d(train_idx, before)[:20]
        assert len(queried) == 20 and not np.array_equal(np.sort(queried), lowest), cycle
        before = labeled[cycle]
