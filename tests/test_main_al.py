"""main_al.py under the toolkit protocol (--protocol deepal): budgets, smoke runs, bad input."""

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_cifar

import main_al
from utils.core.cli import run_cli
from utils.core.errors import UserError
from utils.core.results import read_config, read_cycles
from utils.protocols.deepal import deepal_budget

DIGITS = ["--protocol", "deepal", "--dataset", "digits", "--nStart", "10", "--nQuery", "5", "--nEnd", "20",
          "--n_epoch", "1", "--quiet"]


def test_budgets_are_percents_of_the_pool_with_a_truncated_last_round():
    def budget(start, query, end, pool, count=None, initial=None):
        return deepal_budget(SimpleNamespace(N_START=start, N_QUERY=query, N_END=end, QUERY_SIZE=count), pool, initial)

    assert budget(10, 5, 20, 1437) == (143, 71, 287, 3)  # 143 -> 214 -> 285 -> 287
    assert budget(10, -1, -1, 1000) == (100, 900, 1000, 1)
    assert budget(10, 5, 20, 1437, count=50) == (143, 50, 287, 3)  # --query-size: a count instead of nQuery%
    assert budget(10, 1, 100, 1000, count=50, initial=20) == (20, 50, 1000, 20)  # own images: labeled/ is L_0
    with pytest.raises(UserError, match="nStart"):
        budget(0.01, 1, 20, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("model,strategy", [("LeNet", "EntropySampling"), ("LeNet", "KCenterGreedy"),
                                            ("ResNet18", "BALDDropout"), ("LeNet", "BadgeSampling"),
                                            ("LeNet", "Ensembles"), ("LeNet", "ClusterMarginSampling")])
def test_deepal_runs_on_digits(tmp_path, model, strategy):
    out = str(tmp_path / "run")
    main_al.main([*DIGITS, "--model", model, "--strategy", strategy, "--n_ensembles", "2", "--out", out])
    rows = read_cycles(out)
    assert [r["n_labeled"] for r in rows] == [143, 214, 285, 287]
    labeled = [np.load(f"{out}/labeled/trial0_cycle{c}.npy") for c in range(4)]
    assert [len(set(x.tolist())) for x in labeled] == [214, 285, 287, 287]  # no query after the last round
    config = read_config(out)
    assert config["derived"]["strategy_name"] == strategy and config["settings"]["SEED"] == 1


@pytest.mark.slow
def test_the_toolkit_command_runs_verbatim_on_cifar10_files(tmp_path):
    root = make_cifar(str(tmp_path / "data"), n_train=100, n_test=20)
    out = str(tmp_path / "run")
    main_al.main(["--protocol", "deepal", "--model", "ResNet18", "--dataset", "cifar10", "--strategy",
                  "BadgeSampling", "--nStart", "10", "--nQuery", "1", "--nEnd", "20",
                  "--data_path", root, "--save_path", out, "--n_epoch", "1", "--quiet", "--cycles", "3"])
    assert [r["n_labeled"] for r in read_cycles(out)] == [10, 11, 12]
    assert read_config(out)["derived"]["model_options"] == {"width": 16, "consistency_head": False}


@pytest.mark.slow
def test_resume_continues_the_deepal_rounds(tmp_path):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    common = [*DIGITS, "--model", "LeNet", "--strategy", "BadgeSampling", "--device", "cpu"]
    main_al.main([*common, "--out", full])
    main_al.main([*common, "--out", resumed, "--cycles", "2"])
    main_al.main([*common, "--out", resumed, "--resume"])
    for cycle in range(4):
        assert np.array_equal(np.load(f"{full}/labeled/trial0_cycle{cycle}.npy"),
                              np.load(f"{resumed}/labeled/trial0_cycle{cycle}.npy"))


@pytest.mark.parametrize("argv,message", [
    (["--strategy", "NoSuchStrategy"], "choose from ALFAMix, ASAL, AV_based"),
    (["--strategy", "EntropySampling", "--model", "VGG"], "MODEL expects one of ResNet18"),
    (["--strategy", "EntropySampling", "--cycles", "9"], "needs more labels"),
    (["--strategy", "AV_temperature"], "needs an open-set detector's unknown class"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main([*DIGITS, "--model", "LeNet", *argv, "--out", str(out)]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.slow
@pytest.mark.parametrize("protocol", [
    ["--protocol", "deepal", "--model", "LeNet", "--strategy", "EntropySampling", "--nStart", "10", "--nQuery", "5",
     "--nEnd", "25", "--n_epoch", "1"],
    ["--arch", "lenet", "--al-method", "random", "--al-budget", "40", "--epochs", "1", "--cycles", "3"],
])
def test_known_classes_make_any_strategy_open_set(tmp_path, protocol):
    from utils.core.data import build_data

    out = str(tmp_path / "run")
    main_al.main([*protocol, "--dataset", "digits", "--known-classes", "4", "--data-root", str(tmp_path / "data"),
                  "--quiet", "--out", out])
    targets = build_data("digits").train_targets
    rows = read_cycles(out)
    queried_rows = [r for r in rows if r["n_queried"]]
    assert queried_rows and all(0 <= r["precision"] <= 1 and 0 < r["recall"] <= 1 for r in queried_rows)
    for row in rows:
        labeled = np.load(f"{out}/labeled/trial0_cycle{row['cycle']}.npy")
        assert set(targets[labeled].tolist()) <= {0, 1, 2, 3}  # unknown answers never join the labeled set
        assert row["n_labeled"] + row["n_queried_known"] == len(labeled)
    known_total = int(np.isin(targets, [0, 1, 2, 3]).sum())
    assert queried_rows[-1]["recall"] == pytest.approx(len(labeled) / known_total, abs=1e-5)


def test_the_oracle_discards_unknown_answers_and_counts_them():
    from utils.core.openset import OpenSetPool
    from utils.core.oracles import Oracle

    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    pool = OpenSetPool(np.array([0, 1]), np.array([0]), np.arange(1, 8), num_known=6)
    oracle = Oracle(pool, targets)
    labels, discarded, _waiting, columns = oracle.answer(np.array([2, 3, 5]), labeled_idx=np.array([0]))
    assert labels.tolist() == [3] and discarded.tolist() == [2, 5]
    assert columns == {"n_queried": 3, "n_queried_known": 1, "precision": round(1 / 3, 6), "recall": round(2 / 6, 6)}
    assert oracle.unlabeled(np.arange(8), np.array([0, 3]), discarded).tolist() == [1, 4, 6, 7]
    assert oracle.labelable(np.arange(8)).tolist() == [0, 1, 3, 4, 6, 7]


@pytest.mark.parametrize("protocol,switch,expected", [
    (["--protocol", "deepal", "--model", "LeNet", "--strategy", "TOD"], [], [True, False]),
    (["--protocol", "deepal", "--model", "LeNet", "--strategy", "TOD"], ["--tod-cycle0", "highest"], [False, False]),
    (["--protocol", "rethinking", "--arch", "lenet", "--al-method", "TOD", "--al-budget", "20", "--epochs", "1"], [],
     [True, False]),
])
def test_tod_takes_the_lowest_discrepancies_at_cycle_0_in_both_protocols(tmp_path, monkeypatch, protocol, switch,
                                                                        expected):
    """As TOD's code and main_TOD.py: cycle 0 compares with an untrained network and queries the
    lowest scores there; --tod-cycle0 highest takes the highest at every cycle."""
    from utils.samplers.registry import Strategy

    seen, real = [], Strategy.select
    monkeypatch.setattr(Strategy, "select", lambda self, ctx: seen.append(
        ctx.cycle == 0 and ctx.settings["TOD_CYCLE0"] == "lowest") or real(self, ctx))
    budget = ["--nStart", "10", "--nQuery", "5", "--nEnd", "20", "--n_epoch", "1"]
    common = [] if protocol[1] == "rethinking" else budget
    main_al.main([*protocol, "--dataset", "digits", *common, "--cycles", "2", "--quiet", *switch,
                  "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run")])
    assert seen == expected


def test_the_tod_rule_ranks_the_lowest_discrepancies_first_at_cycle_0_unless_told_otherwise():
    """TOD_CYCLE0 (the strategy's own setting): at cycle 0 the lowest discrepancies come first."""
    from conftest import tiny_context

    from utils.core.train import softmax_probs
    from utils.samplers import get_strategy, tod_scores

    ctx = tiny_context(np.arange(10, 40), 5)
    scores = tod_scores(ctx.predict(softmax_probs), ctx.predict(softmax_probs, model=ctx.extras["previous_model"]))
    highest, lowest = np.argsort(-scores.numpy(), kind="stable")[:5], np.argsort(scores.numpy(), kind="stable")[:5]
    tod = get_strategy("TOD")
    for cycle, setting, expected in ((0, "lowest", lowest), (0, "highest", highest), (1, "lowest", highest)):
        ctx.cycle, ctx.settings["TOD_CYCLE0"] = cycle, setting
        assert tod.select(ctx).tolist() == ctx.candidates[expected].tolist()
