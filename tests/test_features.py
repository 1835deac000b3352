"""Feature sources (--features), the cold start (--init-strategy) and the linear mode (--train-mode linear):
utils/methods/features.py and its wiring into main_al.py."""

import csv
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_script, tiny_data

from utils.core import distributed
from utils.core.errors import UserError
from utils.methods import features

DIGITS_TRAIN = 1437  # the digits training split's size


def settings(**values):
    base = dict(FEATURES="simclr", FEATURE_EPOCHS=1, FEATURE_BATCH=32, FEATURE_LR=1e-3, FEATURE_WIDTH=4, SEED=0,
                INIT_STRATEGY="random", TRAIN_MODE="full")
    return SimpleNamespace(**{**base, **values})


def test_file_source_rows_by_dataset_index(tmp_path):
    data = tiny_data(12)
    table = np.arange(12 * 3, dtype=np.float32).reshape(12, 3)
    np.save(tmp_path / "emb.npy", table)
    source = features.read_file_source("file:x", str(tmp_path / "emb.npy"), data)
    assert torch.equal(source.rows(np.array([5, 0, 11])), torch.as_tensor(table[[5, 0, 11]]))


@pytest.mark.parametrize("array, message", [
    (np.zeros((11, 3), np.float32), "N = 12"),  # a row missing
    (np.zeros(12, np.float32), "N = 12"),  # not N x D
    (np.full((12, 2), np.nan, np.float32), "finite"),
    (None, "no file"),
])
def test_file_source_refuses_wrong_input(tmp_path, array, message):
    path = tmp_path / "emb.npy"
    if array is not None:
        np.save(path, array)
    with pytest.raises(UserError, match=message):
        features.read_file_source("file:x", str(path), tiny_data(12))


def test_torchvision_source_checks_weights_and_is_cached(tmp_path, monkeypatch):
    import torchvision

    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    with pytest.raises(UserError, match="do not fit resnet34"):
        features.torchvision_trunk("resnet34", str(weights))
    with pytest.raises(UserError, match="no weights file"):
        features.torchvision_trunk("resnet18", str(tmp_path / "none.pth"))
    with pytest.raises(UserError, match="no classification architecture"):
        features.torchvision_trunk("resnet7", str(weights))
    data, dist = tiny_data(6), distributed.Dist()
    cfg = settings(FEATURES=f"torchvision:resnet18:{weights}")
    source = features.feature_source(cfg, data, dist, str(tmp_path))
    assert source.train.shape == (6, 512) and source.test.shape == (6, 512)
    calls = []
    monkeypatch.setattr(features, "embed", lambda *a, **k: calls.append(a) or torch.zeros(6, 512))
    again = features.feature_source(cfg, data, dist, str(tmp_path))
    assert not calls and torch.equal(again.train, source.train)  # read from the cache


def test_simclr_encoder_trained_once_per_provenance(tmp_path, monkeypatch):
    data, dist = tiny_data(40), distributed.Dist()
    trained = []
    original = features.train_simclr
    monkeypatch.setattr(features, "train_simclr", lambda *a: trained.append(1) or original(*a))
    first = features.feature_source(settings(), data, dist, str(tmp_path))
    second = features.feature_source(settings(), data, dist, str(tmp_path))
    assert len(trained) == 1 and torch.equal(first.train, second.train)
    assert first.train.shape == (40, 32)  # 8 x FEATURE_WIDTH
    record = torch.load(features.cache_path(str(tmp_path), data, first.provenance), weights_only=True)
    assert record["provenance"]["epochs"] == 1 and record["trunk"]  # how it was made, and the encoder
    features.feature_source(settings(FEATURE_EPOCHS=2), data, dist, str(tmp_path))
    assert len(trained) == 2  # other settings: another encoder
    with open(features.cache_path(str(tmp_path), data, first.provenance), "wb") as fh:
        fh.write(b"damaged")
    features.feature_source(settings(), data, dist, str(tmp_path))
    assert len(trained) == 3  # a damaged cache file: made again
    data.train_idx = data.train_idx[:30]
    features.feature_source(settings(), data, dist, str(tmp_path))
    assert len(trained) == 4  # another pool: another encoder


def test_cold_start_picks_by_the_strategy(tmp_path):
    from utils.samplers import get_strategy
    from utils.samplers.diversity import kcenter_greedy

    data = tiny_data(30)
    table = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    source = features.FeatureSource("file:x", table, np.arange(30))
    labelable = np.arange(3, 30)
    chosen = features.initial_set(get_strategy("KCenterGreedy"), source, data, labelable, 6, distributed.Dist(), 0, {})
    expected = labelable[kcenter_greedy(table[labelable], table[:0], 6).numpy()]
    assert np.array_equal(chosen, np.sort(expected))


def test_init_strategy_needs_features_and_no_model():
    assert features.init_strategy(settings(INIT_STRATEGY="random")) is None
    assert features.init_strategy(settings(INIT_STRATEGY="kcentergreedy")).name == "KCenterGreedy"
    with pytest.raises(UserError, match="needs a trained model"):
        features.init_strategy(settings(INIT_STRATEGY="EntropySampling"))
    with pytest.raises(UserError, match="--features simclr"):
        features.init_strategy(settings(INIT_STRATEGY="KCenterGreedy", FEATURES="model"))


def test_context_reads_the_source_only_when_given():
    from conftest import tiny_context

    ctx = tiny_context(np.arange(10, 40), 4)
    model_features = ctx.features()
    table = torch.randn(60, 7)
    ctx = tiny_context(np.arange(10, 40), 4)
    ctx.embeddings = features.FeatureSource("file:x", table, np.arange(60))
    assert model_features.shape[1] != 7
    assert torch.equal(ctx.features(), table[10:40]) and torch.equal(ctx.labeled_features(), table[ctx.labeled_idx])


def test_linear_probe_output():
    out = features.LinearProbe(4, 3)(torch.randn(5, 4))
    assert out.logits.shape == (5, 3) and out.features.shape == (5, 4)


DEEPAL = ("main_al.py", "--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--nStart", "2",
          "--nQuery", "2", "--nEnd", "4", "--n_epoch", "3", "--device", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("spec, message", [
    ("file:{tmp}/none.npy", "no file"),
    ("file:{tmp}/short.npy", "N = 1437"),
    ("torchvision:resnet34:{tmp}/r18.pth", "do not fit"),
    ("clip", "give model, simclr"),
])
def test_script_refuses_bad_sources_before_writing(tmp_path, spec, message):
    import torchvision

    np.save(tmp_path / "short.npy", np.zeros((10, 4), np.float32))
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "out"
    result = run_script(*DEEPAL, "--strategy", "KCenterGreedy", "--features", spec.format(tmp=tmp_path),
                        "--out", str(out), "--data-root", str(tmp_path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.slow
def test_linear_mode_runs_badge_with_a_cold_start(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "emb.npy", rng.normal(size=(DIGITS_TRAIN, 16)).astype(np.float32))
    out = tmp_path / "out"
    common = (*DEEPAL, "--features", f"file:{tmp_path / 'emb.npy'}", "--train-mode", "linear",
              "--init-strategy", "KCenterGreedy", "--data-root", str(tmp_path))
    result = run_script(*common, "--strategy", "BadgeSampling", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out / "cycles.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["n_labeled"]) for r in rows] == [28, 56, 57] and rows[0]["test_acc"] == ""  # file: has no test rows
    refused = run_script(*common, "--strategy", "BALDDropout", "--out", str(tmp_path / "mc"))
    assert refused.returncode == 2 and "MC-dropout" in refused.stderr and not os.path.exists(tmp_path / "mc")


@pytest.mark.slow
def test_own_images_with_an_empty_labeled_folder(tmp_path):
    from own_images import make_own_images

    from utils.samplers.diversity import kcenter_greedy

    root, out = tmp_path / "images", tmp_path / "out"
    make_own_images(str(root), labeled_per_class=0, n_unlabeled=40, n_test=20, classes=3)
    table = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.save(tmp_path / "emb.npy", table)
    common = ("main_al.py", "--protocol", "deepal", "--dataset", f"folder:{root}", "--oracle", "human",
              "--strategy", "EntropySampling", "--model", "LeNet", "--query-size", "5", "--n_epoch", "2",
              "--device", "cpu", "--features", f"file:{tmp_path / 'emb.npy'}")
    refused = run_script(*common, "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "--init-strategy" in refused.stderr and not (tmp_path / "refused").exists()
    result = run_script(*common, "--init-strategy", "KCenterGreedy", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out / "to_label" / "cycle0.csv") as fh:
        asked = [row["path"] for row in csv.DictReader(fh)]
    with open(out / "images.csv") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    picks = kcenter_greedy(torch.as_tensor(table), torch.zeros(0, 6), 5).numpy()
    assert sorted(asked) == sorted(paths[i] for i in picks)  # the first query is the initial-set strategy's


def test_lfosa_initial_set_by_the_strategy(tmp_path, monkeypatch):
    import AL_center
    from utils.protocols import lfosa
    from utils.samplers.diversity import kcenter_greedy

    table = np.random.default_rng(1).normal(size=(DIGITS_TRAIN, 8)).astype(np.float32)
    np.save(tmp_path / "emb.npy", table)
    starts = []
    original = lfosa.Experiment.start_trial
    monkeypatch.setattr(lfosa.Experiment, "start_trial", lambda self, t: starts.append(original(self, t)) or starts[-1])
    out = str(tmp_path / "run")
    AL_center.main(["--dataset", "digits", "--known-class", "5", "--init-percent", "8", "--query-batch", "20",
                    "--max-query", "1", "--max-epoch", "1", "--quiet", "--set", "WIDTH=8", "--query-strategy",
                    "KCenterGreedy", "--features", f"file:{tmp_path / 'emb.npy'}", "--init-strategy", "KCenterGreedy",
                    "--data-root", str(tmp_path), "--out", out])
    from sklearn.datasets import load_digits  # the known classes 0..4 of the digits training split
    from sklearn.model_selection import train_test_split

    from utils.core.data.datasets import SPLIT_SEED

    digits = load_digits()
    train, _ = train_test_split(np.arange(len(digits.target)), test_size=0.2, stratify=digits.target,
                                random_state=SPLIT_SEED)
    known = np.flatnonzero(digits.target[train] < 5)
    labeled = starts[0].labeled
    expected = known[kcenter_greedy(torch.as_tensor(table[known]), torch.zeros(0, 8), len(labeled)).numpy()]
    assert np.array_equal(labeled, np.sort(expected))


@pytest.mark.parametrize("script", ["main_TOD", "main_LL4AL"])
def test_tod_start_by_the_strategy(tmp_path, monkeypatch, script):
    import importlib

    from utils.samplers.diversity import kcenter_greedy

    table = np.random.default_rng(2).normal(size=(DIGITS_TRAIN, 8)).astype(np.float32)
    np.save(tmp_path / "emb.npy", table)
    chosen = []
    original = features.initial_set
    monkeypatch.setattr(features, "initial_set", lambda *a: chosen.append(original(*a)) or chosen[-1])
    importlib.import_module(script).main([
        "--config", "digits", "--epochs", "1", "--cycles", "1", "--trials", "1", "--set", "WIDTH=4", "--quiet",
        "--features", f"file:{tmp_path / 'emb.npy'}", "--init-strategy", "KCenterGreedy",
        "--data-root", str(tmp_path), "--out", str(tmp_path / "run")])
    expected = kcenter_greedy(torch.as_tensor(table), torch.zeros(0, 8), 100).numpy()
    assert np.array_equal(chosen[0], np.sort(expected))  # START (100 on digits) chosen by k-center


def test_rethinking_initial_budget_by_the_strategy_instead_of_a_split(tmp_path, monkeypatch):
    import main_al
    from utils.core.results import read_cycles

    np.save(tmp_path / "emb.npy", np.random.default_rng(3).normal(size=(DIGITS_TRAIN, 8)).astype(np.float32))
    chosen = []
    original = features.initial_set
    monkeypatch.setattr(features, "initial_set", lambda *a: chosen.append((a, original(*a))) or chosen[-1][1])
    out = tmp_path / "run"
    main_al.main(["--dataset", "digits", "--al-method", "coreset", "--arch", "lenet", "--epochs", "1", "--al-budget",
                  "20", "--al-nb-cycles", "1", "--max-train-samples", "300", "--quiet", "--data-root",
                  str(tmp_path / "data"), "--out", str(out), "--features", f"file:{tmp_path / 'emb.npy'}",
                  "--init-strategy", "KMeansSampling"])
    (args, picked), = chosen
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [20] and args[0].name == "KMeansSampling"
    assert np.isin(picked, args[3]).all() and len(args[3]) == 300  # from the run's pool
    assert np.array_equal(picked, original(*args))  # deterministic for the trial's seed
    assert not (tmp_path / "data" / "labels").exists()  # no split file made or read
