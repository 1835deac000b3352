"""The results folder contract, atomic writes and the resume bookkeeping of Run."""

import json
import os

import numpy as np
import pytest
import torch

from utils.core.errors import UserError
from utils.core.loop import Run
from utils.core.results import CYCLE_COLUMNS, atomic_write, read_cycles
from utils.core.rng import seed_everything

IDENTITY = {"script": "x.py", "START": 2, "SEED": 0}  # what a resumed run must share with the saved one


def make_run(out, identity=IDENTITY, **kwargs):
    return Run(out, {"settings": {**identity, "CYCLES": 3}}, identity, **kwargs)


def finish(run, trial, cycle, labeled):
    return run.commit(trial, cycle, labeled, np.array([100 + cycle]), 50.0 + cycle,
                      {"train_seconds": 1.0, "query_seconds": 0.5}, {"weights": torch.ones(2) * cycle})


def test_commit_writes_the_contract_files(tmp_path):
    out = str(tmp_path / "run")
    run = make_run(out, label="demo", trials=1, cycles=2)
    labeled = finish(run, 0, 0, np.array([3, 1]))
    labeled = finish(run, 0, 1, labeled)
    assert labeled.tolist() == [3, 1, 100, 101]
    with open(os.path.join(out, "cycles.csv")) as fh:
        assert fh.readline().strip() == ",".join(CYCLE_COLUMNS)
    rows = read_cycles(out)
    assert [(r["cycle"], r["n_labeled"], r["test_acc"]) for r in rows] == [(0, 2, 50.0), (1, 3, 51.0)]
    assert np.load(os.path.join(out, "labeled", "trial0_cycle0.npy")).tolist() == [3, 1, 100]
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["label"] == "demo" and config["settings"]["START"] == 2 and "torch" in config["versions"]
    assert json.load(open(os.path.join(out, "state.json")))["finished"] == {"0": 1}
    assert os.listdir(os.path.join(out, "tb"))
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]


def test_resume_restores_the_last_checkpoint_and_rng(tmp_path):
    out = str(tmp_path / "run")
    seed_everything(5)
    run = make_run(out)
    finish(run, 0, 0, np.array([1, 2]))
    expected = torch.rand(3)  # what the uninterrupted run draws next
    resumed = make_run(out, resume=True, cycles=9)  # more cycles is fine
    assert resumed.first_cycle(0) == 1 and resumed.first_cycle(1) == 0
    checkpoint = resumed.restore(0)
    assert checkpoint["labeled_idx"].tolist() == [1, 2, 100] and torch.equal(checkpoint["weights"], torch.zeros(2))
    assert torch.equal(torch.rand(3), expected)
    assert resumed.restore(1) is None


def test_rows_of_an_uncommitted_cycle_are_dropped_on_resume(tmp_path):
    out = str(tmp_path / "run")
    run = make_run(out)
    finish(run, 0, 0, np.array([1, 2]))
    with open(os.path.join(out, "cycles.csv"), "a") as fh:  # killed after the csv, before state.json
        fh.write("0,1,3,99.0,1.0,1.0" + "," * (len(CYCLE_COLUMNS) - 6) + "\n")
    resumed = make_run(out, resume=True)
    finish(resumed, 0, 1, np.array([1, 2, 100]))
    assert [r["test_acc"] for r in read_cycles(out)] == [50.0, 51.0]


def test_existing_runs_need_resume_and_the_same_settings(tmp_path):
    out = str(tmp_path / "run")
    finish(make_run(out), 0, 0, np.array([1, 2]))
    with pytest.raises(UserError, match="--resume"):
        make_run(out)
    with pytest.raises(UserError, match="START"):
        make_run(out, {**IDENTITY, "START": 3}, resume=True)


def test_corrupt_state_and_checkpoint_are_user_errors(tmp_path):
    out = str(tmp_path / "run")
    finish(make_run(out), 0, 0, np.array([1, 2]))
    checkpoint = os.path.join(out, "checkpoints", "trial0.pt")
    with open(checkpoint, "wb") as fh:
        fh.write(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        make_run(out, resume=True).restore(0)
    with open(os.path.join(out, "state.json"), "w") as fh:
        fh.write('{"identity": {')
    with pytest.raises(UserError, match="corrupt"):
        make_run(out, resume=True)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "file.txt")
    atomic_write(path, lambda fh: fh.write(b"old"))

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["file.txt"]


def test_tensorboard_gets_the_settings_the_accuracy_curve_per_trial_and_the_seconds(tmp_path, monkeypatch):
    import tensorboardX

    calls = []

    class Recorder:
        def __init__(self, folder):
            calls.append(("folder", folder))

        def add_text(self, tag, text, step):
            calls.append(("text", tag, text))

        def add_scalar(self, tag, value, step):
            calls.append(("scalar", tag, value, step))

        def close(self):
            pass

    monkeypatch.setattr(tensorboardX, "SummaryWriter", Recorder)
    run = make_run(str(tmp_path / "run"))
    run.log_epoch(None, "trial0/cycle0", 0, 1.5, lr=0.1)
    finish(run, 0, 0, np.array([1, 2]))
    texts = [c for c in calls if c[0] == "text"]
    assert len(texts) == 1 and texts[0][1] == "settings" and "| START | 2 |" in texts[0][2]
    scalars = {c[1]: (c[2], c[3]) for c in calls if c[0] == "scalar"}
    assert scalars["trial0/cycle0/lr"] == (0.1, 0) and scalars["trial0/cycle0/train_loss"] == (1.5, 0)
    assert scalars["trial0/test_acc"] == (50.0, 2)  # step: the labeled-set size
    assert scalars["trial0/train_seconds"] == (1.0, 0) and scalars["trial0/query_seconds"] == (0.5, 0)
