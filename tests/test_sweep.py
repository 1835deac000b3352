"""Paired sweeps (utils/core/sweep.py, main_al.py --strategy A,B,C): one folder per strategy, the
same initial labeled set and initial network for every strategy of a trial, shards and parallel
jobs that give the same runs as one sequential sweep, finished strategies skipped."""

import os

import numpy as np
import pytest
import torch

import main_al
from utils.core.cli import run_cli
from utils.core.errors import UserError
from utils.core.sweep import Shard, child_argv, finished, strategy_list
from utils.protocols.deepal import DeepAL
from utils.protocols.rethinking import Rethinking

DEEPAL = ["--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--nStart", "10", "--nQuery", "5",
          "--nEnd", "20", "--n_epoch", "1", "--n_ensembles", "2", "--quiet"]
RETHINKING = ["--dataset", "digits", "--arch", "lenet", "--al-budget", "20", "--epochs", "1", "--cycles", "2",
              "--max-train-samples", "200", "--max-test-samples", "50", "--quiet"]


def test_strategy_lists_shards_and_child_command_lines():
    assert strategy_list("EntropySampling") is None and strategy_list(None) is None
    assert strategy_list("a, b,c") == ["a", "b", "c"] and strategy_list("all") == ["all"]
    with pytest.raises(UserError, match="twice"):
        strategy_list("a,A")
    assert Shard.parse("2/3").take(list("abcdefg")) == ["b", "e"] and Shard.parse(None).take(["a"]) == ["a"]
    for bad in ("3/2", "0/2", "1", "a/b"):
        with pytest.raises(UserError, match="I/N"):
            Shard.parse(bad)
    argv = ["--strategy", "a,b", "--lr", "0.1", "--out=x", "--jobs", "2", "--resume", "True", "--set", "STRATEGY=a,b",
            "--set", "LR=0.2", "--shard=1/2"]
    drop = {"--strategy": True, "--out": True, "--jobs": True, "--shard": True, "--resume": False,
            "--set": ("STRATEGY",)}
    assert child_argv(argv, drop, ["--strategy", "a"]) == ["--lr", "0.1", "--set", "LR=0.2", "--strategy", "a"]


def test_all_means_every_strategy_the_protocol_can_run():
    for protocol in (DeepAL, Rethinking):
        names = protocol.sweep_strategies(protocol.__new__(protocol), ["all"])
        assert "RandomSampling" in names and "BadgeSampling" in names and "VAAL" in names
        assert "CCAL" not in names and "AV_temperature" not in names  # their extras come from other scripts
    assert "Ensembles" in DeepAL.sweep_strategies(DeepAL.__new__(DeepAL), ["all"])
    assert "Ensembles" not in Rethinking.sweep_strategies(Rethinking.__new__(Rethinking), ["all"])


@pytest.mark.parametrize("argv,message", [
    (["--strategy", "EntropySampling,NoSuch"], "unknown strategy 'NoSuch'"),
    (["--strategy", "EntropySampling,AV_temperature"], "needs an open-set detector's unknown class"),
    (["--strategy", "EntropySampling,RandomSampling", "--shard", "3/2"], "--shard 3/2"),
    (["--strategy", "EntropySampling", "--jobs", "2"], "apply to sweeps"),
    (["--strategy", "EntropySampling,RandomSampling", "--jobs", "0"], "--jobs: expected 1 or more"),
])
def test_bad_sweeps_stop_with_one_line_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main([*DEEPAL, *argv, "--out", str(out)]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def record_initial_states(monkeypatch, protocol_class, method):
    """Wrap the protocol's ``method`` to record, per (strategy, trial, cycle-0 call), the labeled
    set and the first network's weights it returns."""
    seen = {}
    original = getattr(protocol_class, method)

    def wrapped(self, *args):
        result = original(self, *args)
        name = self.cfg[self.cfg.strategy_key]
        if method == "start_trial":
            trial, state = args[0], result
            seen[(name, trial)] = (state.labeled_idx.copy(), state.initial_models[0].state_dict())
        elif args[1] == 0:  # models(state, cycle): the fresh network of cycle 0
            seen.setdefault(name, []).append((args[0].labeled_idx.copy(), result[0].state_dict()))
        return result

    monkeypatch.setattr(protocol_class, method, wrapped)
    return seen


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_the_strategies_of_a_trial_start_from_the_same_labels_and_weights(tmp_path, monkeypatch):
    seen = record_initial_states(monkeypatch, DeepAL, "start_trial")
    strategies = ["RandomSampling", "EntropySampling", "Ensembles", "BALDDropout"]
    main_al.main([*DEEPAL, "--strategy", ",".join(strategies), "--trials", "2", "--cycles", "2",
                  "--out", str(tmp_path / "cmp")])
    for trial in range(2):
        labels, weights = seen[("RandomSampling", trial)]
        for name in strategies[1:]:
            assert np.array_equal(seen[(name, trial)][0], labels), (name, trial)
            assert same_weights(seen[(name, trial)][1], weights), (name, trial)
        first_labels = np.load(tmp_path / "cmp" / "EntropySampling" / "labeled" / f"trial{trial}_cycle0.npy")
        assert np.array_equal(first_labels[:len(labels)], labels)  # what the folder records as L_0
    assert not np.array_equal(seen[("RandomSampling", 0)][0], seen[("RandomSampling", 1)][0])  # trials differ

    seen = record_initial_states(monkeypatch, Rethinking, "models")
    main_al.main([*RETHINKING, "--al-method", "random,uncertainty_entropy,BALDDropout", "--data-root",
                  str(tmp_path / "data"), "--out", str(tmp_path / "rethinking")])
    (labels, weights), = seen["RandomSampling"]
    for name in ("EntropySampling", "BALDDropout"):
        (other_labels, other_weights), = seen[name]
        assert np.array_equal(other_labels, labels) and same_weights(other_weights, weights), name
    assert sorted(os.listdir(tmp_path / "rethinking")) == ["BALDDropout", "EntropySampling", "RandomSampling"]


def labeled_files(folder):
    return {os.path.relpath(os.path.join(d, f), folder): np.load(os.path.join(d, f)).tolist()
            for d, _, files in os.walk(folder) for f in files if f.endswith(".npy")}


@pytest.mark.slow
def test_shards_and_parallel_jobs_equal_one_sequential_sweep_and_finished_runs_are_skipped(tmp_path, capsys):
    grid = [*DEEPAL, "--strategy", "RandomSampling,EntropySampling,KCenterGreedy", "--cycles", "2"]
    main_al.main([*grid, "--out", str(tmp_path / "one")])
    main_al.main([*grid, "--shard", "1/2", "--jobs", "2", "--out", str(tmp_path / "sharded")])
    assert sorted(os.listdir(tmp_path / "sharded")) == ["KCenterGreedy", "KCenterGreedy.log", "RandomSampling",
                                                       "RandomSampling.log"]
    main_al.main([*grid, "--shard", "2/2", "--out", str(tmp_path / "sharded")])
    assert labeled_files(tmp_path / "one") == labeled_files(tmp_path / "sharded") != {}
    capsys.readouterr()
    before = os.path.getmtime(tmp_path / "one" / "KCenterGreedy" / "state.json")
    main_al.main([*grid, "--out", str(tmp_path / "one")])
    assert capsys.readouterr().out.count("skipped") == 3
    assert os.path.getmtime(tmp_path / "one" / "KCenterGreedy" / "state.json") == before
    assert finished(str(tmp_path / "one" / "KCenterGreedy"), 1, 2) and not finished(
        str(tmp_path / "one" / "KCenterGreedy"), 1, 3)
    with pytest.raises(UserError, match="different settings"):  # a changed sweep does not skip, it stops
        main_al.main([*grid, "--lr", "0.05", "--out", str(tmp_path / "one")])
    main_al.main([*grid[:-1], "3", "--out", str(tmp_path / "one")])  # one more cycle: every run resumes
    assert all(len(os.listdir(tmp_path / "one" / name / "labeled")) == 3 for name in ("RandomSampling",
                                                                                      "EntropySampling"))
    import plot

    plot.main([str(tmp_path / "one"), "--out", str(tmp_path / "figures")])  # the sweep's table
    table = (tmp_path / "figures" / "summary.md").read_text().splitlines()
    rows = {line.split("|")[1].strip(): line for line in table if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"run", "RandomSampling", "EntropySampling", "KCenterGreedy"}
    assert "(" in rows["EntropySampling"].split("|")[-2] and rows["RandomSampling"].split("|")[-2].strip() == "—"


def test_an_empty_strategy_list_is_refused():
    for text in (",", " , ,"):
        with pytest.raises(UserError, match="names no strategy"):
            strategy_list(text)
