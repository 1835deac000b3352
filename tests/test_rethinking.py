"""Rethinking deep AL (main_al.py --protocol rethinking): label propagation, jLP, CEAL,
DeepCluster, split files, the LR schedule, and smoke runs of every flag combination."""

import io
import math
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import make_cifar
from torch import nn

import main_al
from models import ModelOutput, build_model
from utils.core.cli import run_cli
from utils.core.data import BatchTransform, ImageData, TensorImages, build_data
from utils.core.distributed import Dist
from utils.core.errors import UserError
from utils.core.results import read_config, read_cycles
from utils.core.splits import make_split, pool_fingerprint, read_split, split_path, write_split
from utils.methods.deepcluster import (
    cluster_assignments,
    load_trunk,
    read_trunk,
    save_trunk,
    trunk_state,
    uniform_over_clusters,
)
from utils.methods.label_propagation import jlp_select, knn_graph, propagate, pseudo_labels
from utils.protocols.pool import Trial
from utils.protocols.rethinking import Rethinking, rethinking_lr
from utils.samplers import get_strategy


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


def test_deepcluster_separates_blobs_and_samples_clusters_uniformly():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 16))
    features = np.concatenate([c + rng.normal(0, 0.5, (40, 16)) for c in centres])
    labels = cluster_assignments(features, 5, seed=0)
    assert [len(set(labels[i * 40:(i + 1) * 40])) for i in range(5)] == [1] * 5 and len(set(labels)) == 5
    skewed = np.array([0] * 90 + [1] * 10)
    drawn = uniform_over_clusters(skewed, 100, rng)
    assert np.bincount(skewed[drawn]).tolist() == [50, 50]


PROVENANCE = {"dataset": "digits", "pool": "0123456789ab", "pool_size": 300, "arch": "lenet", "PRETRAIN_EPOCHS": 1,
              "PRETRAIN_LR": 0.02, "PRETRAIN_BATCH_SIZE": 128, "SEED": 7, "IMAGE_SIZE": None}


def test_deepcluster_weights_load_only_where_their_provenance_matches(tmp_path):
    model = build_model("lenet", 10, 1)
    path = str(tmp_path / "pre.pt")
    save_trunk(model, path, PROVENANCE)
    other = load_trunk(build_model("lenet", 10, 1), read_trunk(path, PROVENANCE, build_model("lenet", 10, 1)))
    assert torch.equal(other.conv1.weight, model.conv1.weight) and not torch.equal(other.fc2.weight, model.fc2.weight)
    with pytest.raises(UserError, match=r"trained otherwise \(pool_size 300 there, 1437 here; PRETRAIN_EPOCHS 1 there, "
                                        r"400 here\)"):
        read_trunk(path, {**PROVENANCE, "PRETRAIN_EPOCHS": 400, "pool_size": 1437}, model)
    with pytest.raises(UserError, match=r"do not fit this model \(this model has no conv1\.weight"):
        read_trunk(path, PROVENANCE, build_model("cifar_cnn", 10, 1))
    torch.save(trunk_state(model), path)  # as an older version saved them: weights only
    with pytest.raises(UserError, match="do not record how they were trained"):
        read_trunk(path, PROVENANCE, model)


def seed_layout(model, classes=50):
    """``model``'s (our cifar_cnn) weights as the seed's cifar_cnn state dict: DataParallel's
    ``module.``, conv1a/bn1a/.../bn3c, old-style weight norm, and its two heads (``classes`` outputs)."""
    state = {}
    for key, value in trunk_state(model).items():
        block, position, name = key.split(".", 2)
        layer = f"{'bn' if int(position) % 3 else 'conv'}{block[-1]}{'abc'[int(position) // 3]}"
        name = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}.get(
            name, name)
        state[f"module.{layer}.{name}"] = value.clone()
    for head in ("fc1", "fc2"):
        state.update({f"module.{head}.bias": torch.zeros(classes), f"module.{head}.weight_g": torch.ones(classes, 1),
                      f"module.{head}.weight_v": torch.randn(classes, 128)})
    return state


class GpuPickler(pickle.Pickler):
    """pickle.dump as the seed saved its weights, from a model on the GPU: every storage is the bytes
    of a legacy torch.save whose location says cuda:0 (plain pickle.load fails on a CPU machine)."""

    def reducer_override(self, obj):
        if not isinstance(obj, torch.storage.TypedStorage):
            return NotImplemented
        buffer = io.BytesIO()
        torch.save(obj, buffer, _use_new_zipfile_serialization=False)
        on_gpu = buffer.getvalue().replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        return torch.storage._load_from_bytes, (on_gpu,)


@pytest.mark.parametrize("how", ["pickle.dump", "torch.save"])
def test_the_seeds_weights_file_loads_into_our_cifar_cnn(tmp_path, how):
    source = build_model("cifar_cnn", 10, 3)
    with torch.no_grad():
        for tensor in source.state_dict().values():
            tensor.add_(torch.rand_like(tensor, dtype=torch.float) if tensor.is_floating_point() else 3)
    path = str(tmp_path / "pretrained_cifar_cifar_cnn_lr0.02_batch_128_final.pickle")
    with open(path, "wb") as fh:
        if how == "pickle.dump":
            GpuPickler(fh, protocol=pickle.HIGHEST_PROTOCOL).dump(seed_layout(source))
        else:
            torch.save(seed_layout(source), fh)
    if how == "pickle.dump" and not torch.cuda.is_available():
        with open(path, "rb") as fh, pytest.raises(RuntimeError, match="CUDA"):
            pickle.load(fh)
    model = build_model("cifar_cnn", 10, 3)
    trunk = read_trunk(path, {"ignored": "the seed's weights record no provenance"}, model)
    load_trunk(model, trunk)
    loaded, expected = model.state_dict(), trunk_state(source)
    assert set(trunk) == set(expected) and all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert not torch.equal(loaded["fc2.bias"], source.state_dict()["fc2.bias"])
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model.eval()(x).features, source.eval()(x).features)
    with pytest.raises(UserError, match=r"weight\.original1 is \[128, 3, 3, 3\] there, \[128, 1, 3, 3\] here"):
        read_trunk(path, {}, build_model("cifar_cnn", 10, 1))  # the seed's MNIST took 3-channel images


def test_weights_that_run_code_are_refused(tmp_path):
    path = str(tmp_path / "evil.pickle")
    with open(path, "wb") as fh:
        pickle.dump({"module.conv1a.bias": eval}, fh)
    with pytest.raises(UserError, match="it names builtins.eval, which does not rebuild a tensor"):
        read_trunk(path, {}, build_model("cifar_cnn", 10, 3))


def test_split_files_are_balanced_reproducible_and_checked(tmp_path):
    targets = np.repeat(np.arange(10), 50)
    split = make_split(targets, np.arange(500), 100, split=3)
    assert np.array_equal(split, make_split(targets, np.arange(500), 100, split=3))
    assert not np.array_equal(split, make_split(targets, np.arange(500), 100, split=4))
    assert np.bincount(targets[split]).tolist() == [10] * 10
    path = split_path(str(tmp_path), "cifar10", 100, 3)
    assert path.endswith(os.path.join("labels", "cifar10", "100_balanced_labels", "03.txt"))
    write_split(path, split, targets)
    assert np.array_equal(read_split(path, np.arange(500)), split)
    assert open(path).readline().split()[1] == str(targets[split[0]])
    with pytest.raises(UserError, match=r"split file .*03\.txt: 80 of its 100 images are not in this run's pool of "
                                        "100 .*; delete it"):
        read_split(path, np.arange(100))


def test_split_files_of_a_subset_pool_have_their_own_path():
    full = split_path("root", "digits", 20, 0)
    subset, other = split_path("root", "digits", 20, 0, np.arange(300)), split_path("root", "digits", 20, 0, [1, 2])
    assert full == os.path.join("root", "labels", "digits", "20_balanced_labels", "00.txt")  # the seed's path
    assert subset == os.path.join("root", "labels", "digits", f"20_balanced_labels_pool-{pool_fingerprint(range(300))}",
                                  "00.txt")
    assert len({full, subset, other}) == 3 and pool_fingerprint([2, 1]) == pool_fingerprint([1, 2])


def rethinking(flags, data_root, dataset="digits"):
    """The protocol of ``main_al.py --al-method random --al-budget 20 FLAGS`` bound to its data."""
    args, cfg = main_al.parse_args(["--al-method", "random", "--dataset", dataset, "--al-budget", "20",
                                    "--data-root", str(data_root), *flags])
    protocol = Rethinking(cfg, args)
    protocol.bind(protocol.load_data(), Dist(), get_strategy("RandomSampling"))
    return protocol


def test_a_subset_run_draws_its_split_from_its_own_pool_after_a_full_run(tmp_path):
    full = rethinking(["--split", "1"], tmp_path)  # (split 0 of the whole set lies in the --seed 7 subset: same RNG)
    full_split = full.start_trial(0, full.data.train_idx).labeled_idx
    subset = rethinking(["--split", "1", "--max-train-samples", "300"], tmp_path)
    labeled = subset.start_trial(0, subset.data.train_idx).labeled_idx
    assert len(labeled) == 20 and set(labeled) <= set(subset.data.train_idx)
    assert np.array_equal(full.start_trial(0, full.data.train_idx).labeled_idx, full_split)  # not the subset's
    assert np.array_equal(subset.start_trial(0, subset.data.train_idx).labeled_idx, labeled)


def test_a_split_file_of_another_pool_stops_the_run_before_anything_is_written(tmp_path, capsys):
    pool = build_data("digits", max_train_samples=300, seed=7).train_idx  # SMALL's pool (--seed 7)
    path = split_path(str(tmp_path / "data"), "digits", 20, 0, pool)
    write_split(path, np.arange(20), np.zeros(1437, dtype=int))  # e.g. copied from the whole set's split
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main([*SMALL, "--al-method", "random", "--data-root", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "run")]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and f"split file {path}: " in err, err
    assert "images are not in this run's pool of 300" in err and not os.path.exists(tmp_path / "run")


def test_foreign_deepcluster_weights_stop_the_run_before_anything_is_written(tmp_path, capsys):
    save_trunk(build_model("lenet", 10, 1), str(tmp_path / "pre" / "deepcluster_digits_lenet.pt"), PROVENANCE)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main([*SMALL, "--al-method", "random", "--add-unsupervised-pretraining", "True",
                                      "--pretrained-dir", str(tmp_path / "pre"), "--data-root", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "run")]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "PRETRAIN_EPOCHS 1 there, 400 here" in err, err
    assert "pool '0123456789ab' there" in err and not os.path.exists(tmp_path / "run")


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
    pool = build_data("digits", max_train_samples=300, seed=7).train_idx  # SMALL's pool (--seed 7)
    assert os.path.isfile(split_path(str(tmp_path / "data"), "digits", 20, 0, pool))
    assert not os.path.exists(split_path(str(tmp_path / "data"), "digits", 20, 0))  # the whole set's path


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
    with pytest.raises(SystemExit) as exit_info:  # the 1-epoch weights are not those of a 400-epoch run
        run_cli(lambda: main_al.main([*common, "--add-unsupervised-pretraining", "True", "--out", str(tmp_path / "c")]))
    assert exit_info.value.code == 2 and "PRETRAIN_EPOCHS 1 there, 400 here" in capsys.readouterr().err
    main_al.main([*common, "--add-unsupervised-pretraining", "True", "--pretrain-epochs", "1", "--out",
                  str(tmp_path / "c")])
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
    assert written == [split_path(str(tmp_path), "digits", 50, split) for split in range(3)]
    assert [len(open(p).readlines()) for p in written] == [50, 50, 50]


def test_make_splits_writes_for_the_pool_of_the_run_it_is_given(tmp_path, capsys):
    pool = build_data("digits", max_train_samples=300, seed=7).train_idx
    main_al.main(["--make-splits", "--dataset", "digits", "--nr-splits", "1", "--split-size", "20",
                  "--max-train-samples", "300", "--data-root", str(tmp_path)])
    written = capsys.readouterr().out.split()
    assert written == [split_path(str(tmp_path), "digits", 20, 0, pool)]
    assert set(read_split(written[0], pool)) <= set(pool)
    assert not os.path.exists(split_path(str(tmp_path), "digits", 20, 0))  # the whole set's file is not touched


@pytest.mark.slow
def test_the_seed_command_runs_verbatim_on_cifar10_files(tmp_path):
    root = make_cifar(str(tmp_path / "data"), n_train=300, n_test=20)
    out = str(tmp_path / "run")
    main_al.main(["--dataset", "cifar10", "--al-method", "uncertainty_entropy", "--split", "0", "--al-budget", "100",
                  "--data-root", root, "--out", out, "--epochs", "1", "--cycles", "1", "--quiet"])
    assert [r["n_labeled"] for r in read_cycles(out)] == [100]
    assert read_config(out)["settings"]["ARCH"] == "cifar_cnn"


def test_a_pretrained_dir_holding_the_seeds_weights_gives_every_cycle_their_trunk(tmp_path):
    root = make_cifar(str(tmp_path / "data"), n_train=40, n_test=20)
    source, seed_dir = build_model("cifar_cnn", 10, 3), tmp_path / "models" / "pretrained"
    seed_dir.mkdir(parents=True)
    torch.save(seed_layout(source), seed_dir / "pretrained_cifar_cifar_cnn_lr0.02_batch_128_final.pickle")
    protocol = rethinking(["--add-unsupervised-pretraining", "True", "--pretrained-dir", str(seed_dir)], root,
                          "cifar10")
    protocol.fit_inputs()
    assert protocol.pretrained == str(seed_dir / "pretrained_cifar_cifar_cnn_lr0.02_batch_128_final.pickle")
    model = protocol.models(Trial(np.arange(10)), 0)[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trunk_state(source).items())


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


def test_a_data_root_that_cannot_take_the_split_file_still_runs(tmp_path, monkeypatch):
    """The split file is a cache (the same split is drawn again): a read-only --data-root is no error."""
    import utils.protocols.rethinking as rethinking

    def refuse(path, *args):
        raise UserError(f"cannot write {path} (Read-only file system): choose another --out or fix its permissions")

    monkeypatch.setattr(rethinking, "write_split", refuse)
    out = tmp_path / "run"
    main_al.main(["--dataset", "digits", "--al-method", "random", "--arch", "lenet", "--epochs", "1", "--al-budget",
                  "20", "--al-nb-cycles", "1", "--quiet", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [20]


@pytest.mark.parametrize("batches", [1, 3, 4])
def test_every_rank_takes_as_many_steps_as_the_others(batches):
    """An epoch of an odd number of batches under 2 processes: rank 1 would take one step fewer and
    the ranks' gradient all-reduce would wait for ever; the list is padded with its first batches."""
    from utils.core.data import BatchListSampler

    lists = [[[2 * b, 2 * b + 1] for b in range(batches)]] * 2
    ranks = [list(BatchListSampler(lambda _epoch, r=r: lists[r], rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == -(-batches // 2)
    assert set(map(tuple, ranks[0] + ranks[1])) == set(map(tuple, lists[0]))  # every batch is taken
