"""Comparisons that hold up (utils/reporting/summary.py, plot.py): bootstrap intervals over trials, the
paired t-test against a reference strategy, the pairwise penalty matrix (Ash et al., 2020), the
stopping statistic, the per-class test accuracies, the imbalanced pools and the budget regimes, on
known answers."""

import csv
import io
import json

import numpy as np
import pytest
import torch
from conftest import TinyNet, tiny_data
from scipy import stats

import main_al
import plot
from config.deepal import budget_counts
from models import ModelOutput
from utils.core.data import build_data
from utils.core.distributed import Dist
from utils.core.errors import UserError
from utils.core.results import read_config, read_cycles
from utils.core.splits import long_tail_subset
from utils.core.train import EvalScores, cohen_kappa, evaluate, stop_set
from utils.protocols.deepal import deepal_budget
from utils.reporting import summary, tables

HEADER = "trial,cycle,n_labeled,test_acc,train_seconds,query_seconds,balanced_acc,min_class_acc\n"


def write_run(folder, strategy, accs, sizes=(10, 20, 40), balanced=None, kappas=None):
    """A main_al.py --protocol deepal folder: ``accs`` one list of test accuracies per trial."""
    folder.mkdir(parents=True)
    extra = ",stop_kappa" if kappas is not None else ""
    lines = []
    for t, trial in enumerate(accs):
        for c, (n, acc) in enumerate(zip(sizes, trial)):
            bal = acc if balanced is None else balanced[t][c]
            kappa = "" if kappas is None else f",{kappas[t][c]}"
            lines.append(f"{t},{c},{n},{acc},1.0,0.5,{bal},{bal - 10}{kappa}\n")
    (folder / "cycles.csv").write_text(HEADER.rstrip("\n") + extra + "\n" + "".join(lines))
    config = {"script": "main_al.py --protocol deepal", "label": strategy, "resumable": ["TRIALS"],
              "settings": {"STRATEGY": strategy, "SEED": 1, "TRIALS": len(accs)},
              "derived": {"strategy_name": strategy}}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def table_of(folders, **options):
    groups = plot.load_groups(folders)
    labels = summary.make_labels(groups)
    return {s.label: s for s in summary.summary_table(groups, labels, **options)}, groups, labels


# --------------------------------------------------------------------------- intervals and tests
def test_bootstrap_interval_of_constant_data_is_a_point_and_needs_three_trials():
    assert summary.bootstrap_ci([70.0, 70.0, 70.0, 70.0]) == (70.0, 70.0)
    assert summary.bootstrap_ci([70.0, 71.0]) is None  # too few trials: no interval
    low, high = summary.bootstrap_ci([60.0, 70.0, 80.0, 65.0, 75.0], resamples=20_000, seed=3)
    assert 60.0 < low < 70.0 < high < 80.0  # the mean's interval, narrower than the data's range
    data = [60.0, 70.0, 80.0, 65.0, 75.0, 71.0]
    assert summary.bootstrap_ci(data, 200, seed=5) == summary.bootstrap_ci(data, 200, seed=5)  # seeded
    assert summary.bootstrap_ci(data, 200, seed=5) != summary.bootstrap_ci(data, 200, seed=6)
    assert summary.bootstrap_ci([60.0, 70.0, 80.0]) == (60.0, 80.0)  # 3 trials: 1/27 of resamples are all-min


def test_paired_t_pvalue_is_scipys_ttest_rel_and_defined_for_constant_differences():
    a, b = np.array([71.0, 74.0, 69.0, 80.0]), np.array([70.0, 70.5, 68.0, 75.0])
    assert summary.paired_t_pvalue(a - b) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert summary.paired_t_pvalue(np.zeros(3)) == 1.0 and summary.paired_t_pvalue(np.full(3, 2.0)) == 0.0
    assert np.isnan(summary.paired_t_pvalue(np.array([1.0])))
    batch = summary.paired_t_pvalue(np.stack([a - b, b - a]))  # along the last axis
    assert batch.shape == (2,) and batch[0] == pytest.approx(batch[1])


def test_summary_has_intervals_paired_test_and_class_aubcs_against_a_chosen_reference(tmp_path):
    random = write_run(tmp_path / "RandomSampling", "RandomSampling", [[50, 60, 80]] * 3)
    entropy = write_run(tmp_path / "EntropySampling", "EntropySampling", [[52, 62, 82], [51, 61, 81], [49, 59, 79]])
    table, _, _ = table_of([random, entropy])
    row = table["EntropySampling"]
    assert row.aubc_ci is not None and row.aubc_ci[0] <= row.aubc_mean <= row.aubc_ci[1]
    assert table["RandomSampling"].aubc_ci == (65.0, 65.0)  # three equal trials: a point
    paired = row.vs_reference  # AUBC differences +2, +1, -1
    assert (paired.diff, paired.wins, paired.trials) == (pytest.approx(2 / 3), 2, 3)
    assert paired.p_value == pytest.approx(stats.ttest_1samp([2.0, 1.0, -1.0], 0).pvalue)
    assert paired.ci[0] < paired.diff < paired.ci[1] and paired.final_diff == pytest.approx(2 / 3)
    assert row.balanced_aubc[0] == pytest.approx(row.aubc_mean) and row.min_class_aubc[0] == pytest.approx(
        row.aubc_mean - 10)
    table, _, _ = table_of([random, entropy], reference="EntropySampling")  # the other way round
    assert table["RandomSampling"].vs_reference.diff == pytest.approx(-2 / 3) and table[
        "EntropySampling"].vs_reference is None


def test_plot_writes_interval_columns_and_refuses_an_unknown_reference(tmp_path):
    write_run(tmp_path / "s" / "RandomSampling", "RandomSampling", [[50, 60, 80]] * 3)
    write_run(tmp_path / "s" / "EntropySampling", "EntropySampling", [[52, 62, 82], [51, 61, 81], [49, 59, 79]])
    plot.main([str(tmp_path / "s"), "--bootstrap", "500"])
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO((tmp_path / "s" / "summary.csv").read_text()))}
    entropy = rows["EntropySampling"]
    assert float(entropy["aubc_ci_low"]) <= float(entropy["aubc_mean"]) <= float(entropy["aubc_ci_high"])
    assert float(entropy["diff_aubc_ci_low"]) < float(entropy["diff_aubc"]) < float(entropy["diff_aubc_ci_high"])
    assert 0 < float(entropy["p_value"]) < 1 and entropy["balanced_aubc_mean"] != ""
    assert (tmp_path / "s" / "penalty_matrix.csv").is_file() and (tmp_path / "s" / "penalty_matrix.png").is_file()
    with pytest.raises(UserError, match="--reference BadgeSampling: no plotted run uses it"):
        plot.main([str(tmp_path / "s"), "--reference", "BadgeSampling"])
    with pytest.raises(UserError, match="--bootstrap 0"):
        plot.main([str(tmp_path / "s"), "--bootstrap", "0"])


def test_old_folders_without_the_new_columns_are_still_summarised(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "cycles.csv").write_text("trial,cycle,n_labeled,test_acc,train_seconds,query_seconds\n"
                                       "0,0,10,50.0,1,1\n0,1,20,60.0,1,1\n")
    [row] = table_of([str(folder)])[0].values()
    assert row.aubc_mean == 55.0 and np.isnan(row.balanced_aubc[0]) and row.stops is None
    assert "balanced AUBC" not in tables.to_markdown([row])


# --------------------------------------------------------------------------- the penalty matrix
def test_penalty_matrix_of_a_dominating_strategy(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.5, size=(4, 3))
    base = np.array([50.0, 60.0, 70.0])
    best = write_run(tmp_path / "Best", "Best", (base + 10 + noise).tolist())
    mid = write_run(tmp_path / "Mid", "Mid", (base + noise[::-1]).tolist())
    wobble = np.array([[0.3], [-0.3], [0.3], [-0.3]])  # paired differences of mean 0: p = 1
    same = write_run(tmp_path / "Same", "Same", (base + noise[::-1] + wobble).tolist())
    _, groups, labels = table_of([best, mid, same])
    matrix = summary.penalty_matrix(groups)
    order = {label: i for i, label in enumerate(labels)}
    b, m, s = order["Best"], order["Mid"], order["Same"]
    # Best beats both others at every one of the 3 sizes: 3 * 1/3; nobody beats Best
    assert matrix[b, m] == pytest.approx(1.0) and matrix[b, s] == pytest.approx(1.0)
    assert matrix[:, b].sum() == 0 and matrix[m, s] == matrix[s, m] == 0  # Mid and Same do not differ
    assert np.diag(matrix).sum() == 0
    table = summary.summary_table(groups, labels, penalty=matrix)
    assert {row.label: row.times_beaten for row in table} == pytest.approx({"Best": 0.0, "Mid": 1.0, "Same": 1.0})
    text = tables.penalty_csv(matrix, labels)
    assert text.splitlines()[-1].startswith("times beaten,")


def test_penalty_matrix_counts_only_the_sizes_both_reached_and_one_trial_is_no_test(tmp_path):
    long = write_run(tmp_path / "Long", "Long", [[60, 70, 80, 90]] * 2 + [[61, 71, 81, 91]],
                     sizes=(10, 20, 30, 40))
    short = write_run(tmp_path / "Short", "Short", [[50, 55], [50, 56], [51, 55]], sizes=(10, 20))
    _, groups, labels = table_of([long, short])
    matrix = summary.penalty_matrix(groups)
    assert matrix[labels.index("Long"), labels.index("Short")] == pytest.approx(1.0)  # 2 of the 2 common sizes
    single = write_run(tmp_path / "One", "One", [[99, 99]], sizes=(10, 20))
    _, groups, labels = table_of([long, single])
    assert summary.penalty_matrix(groups).sum() == 0  # one paired trial: no t-test


def test_penalty_heat_map_is_readable_with_30_strategies(tmp_path):
    rng = np.random.default_rng(1)
    folders = [write_run(tmp_path / f"Strategy{i:02d}", f"Strategy{i:02d}",
                         (np.array([50.0, 60, 70]) + i * 0.3 + rng.normal(0, 0.4, (3, 3))).tolist())
               for i in range(30)]
    plot.main([str(tmp_path), "--bootstrap", "100"])
    with open(tmp_path / "penalty_matrix.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    lines = (tmp_path / "penalty_matrix.csv").read_text().splitlines()
    assert len(lines) == 32 and len(lines[0].split(",")) == 31 and len(folders) == 30


# --------------------------------------------------------------------------- per-class test accuracy
class AlwaysZero(torch.nn.Module):
    """Answers class 0 for every image."""

    def forward(self, x):
        logits = torch.zeros(len(x), 3)
        logits[:, 0] = 1.0
        return ModelOutput(logits, logits)


def test_evaluate_returns_the_accuracy_and_each_classs_accuracy():
    data = tiny_data(60)  # classes 0, 1, 2: 20 test images each
    scores = evaluate(AlwaysZero(), data, 7, Dist())
    assert scores.acc == pytest.approx(100 / 3) and scores.per_class.tolist() == [100.0, 0.0, 0.0]
    assert scores.balanced_acc == pytest.approx(100 / 3) and scores.min_class_acc == 0.0
    model = TinyNet()
    scores = evaluate(model, data, 7, Dist())
    with torch.no_grad():
        model.eval()
        x = data.eval_transform(data.test.__getitems__(list(range(60)))[0])
        predicted = model(x).logits.argmax(1)
    targets = data.test.targets
    assert scores.acc == 100.0 * (predicted == targets).float().mean().item()  # test_acc as before, exactly
    expected = [100.0 * (predicted[targets == c] == c).float().mean().item() for c in range(3)]
    assert scores.per_class.tolist() == pytest.approx(expected)
    data.test_idx = np.arange(0, 60, 3)  # only class 0 in the test set: the other classes are no class's NaN
    scores = evaluate(AlwaysZero(), data, 7, Dist())
    assert scores.balanced_acc == scores.min_class_acc == 100.0 and np.isnan(scores.per_class[1:]).all()
    mean = EvalScores.mean([EvalScores(50.0, np.array([100.0, 0.0])), EvalScores(70.0, np.array([80.0, 60.0]))])
    assert mean.acc == 60.0 and mean.per_class.tolist() == [90.0, 30.0]
    assert mean.columns() == {"balanced_acc": 60.0, "min_class_acc": 30.0}


# --------------------------------------------------------------------------- imbalanced pools
def test_long_tail_profile_has_the_cifar10_lt_counts_and_a_seeded_head():
    targets = np.repeat(np.arange(10), 5000)
    kept, counts = long_tail_subset(targets, np.arange(len(targets)), 100, seed=0)
    # Cao et al.'s CIFAR-10-LT at imbalance ratio 100
    assert sorted(counts, reverse=True) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert np.bincount(targets[kept]).tolist() == counts and len(np.unique(kept)) == len(kept) == sum(counts)
    heads = {int(np.argmax(long_tail_subset(targets, np.arange(len(targets)), 10, seed=s)[1])) for s in range(8)}
    assert len(heads) > 1  # which class is the head depends on the seed
    again, same = long_tail_subset(targets, np.arange(len(targets)), 100, seed=0)
    assert np.array_equal(again, kept) and same == counts
    assert sorted(long_tail_subset(targets, np.arange(len(targets)), 1, seed=0)[1]) == [5000] * 10  # ratio 1: all


def test_imbalance_subsamples_the_pool_only_and_config_records_the_counts(tmp_path):
    plain = build_data("digits")
    data = build_data("digits", imbalance=10.0, seed=3)
    assert np.array_equal(data.test_idx, plain.test_idx) and plain.class_counts is None
    counts = np.bincount(data.train_targets[data.train_idx], minlength=10)
    available = np.bincount(plain.train_targets)
    head = int(np.argmax(counts))
    assert counts.tolist() == data.class_counts and counts[head] == available[head]  # the head keeps its images
    assert counts.min() == int(available.max() / 10)  # the tail: n_max / 10
    subset = build_data("digits", max_train_samples=500, imbalance=10.0, seed=3)  # after the balanced subset
    assert max(subset.class_counts) == 50 and min(subset.class_counts) == 5


def test_a_run_from_before_a_new_setting_resumes_while_it_is_off(tmp_path):
    from utils.core.loop import Run

    out = str(tmp_path / "run")
    old = {"SEED": 1}
    run = Run(out, {"settings": old}, old)
    run.commit(0, 0, np.array([1, 2]), np.array([3]), 50.0, {}, {})
    run.close()
    Run(out, {"settings": old}, {**old, "IMBALANCE": None}, resume=True).close()  # the new key, off: same run
    with pytest.raises(UserError, match="IMBALANCE"):
        Run(out, {"settings": old}, {**old, "IMBALANCE": 10.0}, resume=True)


# --------------------------------------------------------------------------- budget regimes
def test_budget_regimes_give_lueth_et_als_counts():
    assert budget_counts("low", 10, 50_000) == (50, 50, 550)  # CIFAR-10: their 50 / 250 / 1,000 per round
    assert budget_counts("mid", 10, 50_000) == (250, 250, 2750)
    assert budget_counts("high", 10, 50_000) == (1000, 1000, 11_000)
    assert budget_counts("low", 100, 50_000)[:2] == (500, 500)
    with pytest.raises(UserError, match="--budget mid needs 250 \\+ 10\\*250 = 2750 labels"):
        budget_counts("mid", 10, 1437)
    _, cfg = main_al.parse_args(["--protocol", "deepal", "--strategy", "RandomSampling", "--budget", "low"])
    assert deepal_budget(cfg, 1437, None, 10) == (50, 50, 550, 10)
    with pytest.raises(UserError, match="drop N_START"):
        main_al.parse_args(["--protocol", "deepal", "--strategy", "RandomSampling", "--budget", "low", "--nStart", "5"])


# --------------------------------------------------------------------------- the stopping signal
def test_kappa_of_identical_predictions_is_one_and_known_values():
    a = np.array([0, 1, 2, 2, 1, 0])
    assert cohen_kappa(a, a) == 1.0 and cohen_kappa(np.zeros(5), np.zeros(5)) == 1.0  # one class: p_e = 1
    b = np.array([0, 1, 2, 2, 1, 1])  # p_o = 5/6, p_e = (2*1 + 2*3 + 2*2)/36 = 1/3 -> kappa 0.75
    assert cohen_kappa(a, b) == pytest.approx(0.75)
    assert cohen_kappa(np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])) == pytest.approx(-1.0)
    pool = np.arange(100, 5100)
    chosen = stop_set(pool, 7)
    assert len(chosen) == 2000 and np.isin(chosen, pool).all() and np.array_equal(chosen, stop_set(pool, 7))
    state = np.random.get_state()[1].copy()
    assert len(stop_set(pool[:50], 7)) == 50 and np.array_equal(np.random.get_state()[1], state)  # global RNG kept


def test_the_stopping_rule_fires_when_the_mean_of_three_kappas_reaches_099(tmp_path):
    rows = [{"cycle": c, "n_labeled": 10 * (c + 1), "stop_kappa": k}
            for c, k in enumerate(["", 0.5, 0.999, 0.999, 0.97, 0.999, 1.0, 1.0])]
    assert summary.stop_point(rows)["cycle"] == 7  # the mean of (0.999, 1.0, 1.0) reaches 0.99
    assert summary.stop_point(rows[:7]) is None  # (0.97 + 0.999 + 1.0) / 3 < 0.99; nor (0.5, 0.999, 0.999)
    kappas = [["", 0.5, 0.995, 0.995, 0.995], ["", 0.2, 0.3, 0.999, 0.999]]
    run = write_run(tmp_path / "run", "EntropySampling", [[50, 60, 70, 75, 80]] * 2, sizes=(10, 20, 30, 40, 50),
                    kappas=kappas)
    [group] = plot.load_groups([run])
    assert plot.stop_x(group.rows) == 50.0  # trial 0 stops at 50 labels, trial 1 never
    [row] = summary.summary_table([group], ["EntropySampling"])
    assert row.stops == (50.0, 1) and "| 50 (1/2) |" in tables.to_markdown([row])
    plot.main([run])  # the accuracy figure marks it


@pytest.mark.slow
def test_main_al_records_class_accuracies_stop_kappa_and_class_counts(tmp_path):
    out = str(tmp_path / "run")
    main_al.main(["--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--strategy", "RandomSampling",
                  "--nStart", "10", "--nQuery", "10", "--nEnd", "30", "--n_epoch", "1", "--imbalance", "10",
                  "--quiet", "--out", out])
    rows = read_cycles(out)
    assert [r["stop_kappa"] for r in rows][0] == "" and all(-1 <= r["stop_kappa"] <= 1 for r in rows[1:])
    assert all(r["min_class_acc"] <= r["balanced_acc"] for r in rows)
    counts = read_config(out)["derived"]["class_counts"]
    assert len(counts) == 10 and min(counts) == 14  # digits' largest class, 146 images, over 10
