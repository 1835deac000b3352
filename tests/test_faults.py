"""Faults: a stop at every write of a run, then --resume, reproduces the uninterrupted run; a second
run into the same folder, leftover temp files, a full disk, damaged or foreign resume files."""

import os
import shutil

import numpy as np
import pytest
import torch

import active_main
import AL_center
import AL_center_temperature
import contrast_main
import main_al
import main_LL4AL
import main_TOD
from utils.core.cli import UserError
from utils.core.loop import Run
from utils.core.results import read_cycles

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(BaseException):
    """A stop at a chosen write (what kill -9 does to the run's files: every rename before it
    happened, none after)."""


@pytest.fixture
def kill_after(monkeypatch):
    """``kill_after(n)``: the n-th rename (os.replace) of the run completes, then the run stops;
    returns a counter whose ``count`` is the renames so far (``kill_after(None)``: only count)."""
    real = os.replace

    class Counter:
        count, at, names = 0, None, []

    def replace(src, dst):
        real(src, dst)
        Counter.count += 1
        Counter.names.append(os.path.basename(dst))
        if Counter.count == Counter.at:
            raise Killed(dst)

    def arm(n):
        Counter.count, Counter.at, Counter.names = 0, n, []
        return Counter

    monkeypatch.setattr(os, "replace", replace)
    return arm


def outcome(out):
    """What a run decided: every labeled set and every cycles.csv row without its timings."""
    folder = os.path.join(out, "labeled")
    labeled = {name: np.load(os.path.join(folder, name)).tolist() for name in sorted(os.listdir(folder))}
    rows = [{k: "nan" if v != v else v for k, v in r.items() if not k.endswith("seconds")}  # NaN != NaN
            for r in read_cycles(out)]
    return labeled, rows


DEEPAL = ["--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--strategy", "BadgeSampling",
          "--nStart", "10", "--nQuery", "5", "--nEnd", "20", "--n_epoch", "1", "--cycles", "3", "--quiet",
          "--device", "cpu"]  # (exact resume: CPU results, also on a GPU host)


@pytest.mark.slow
def test_a_stop_at_every_write_of_main_al_resumes_to_the_uninterrupted_run(tmp_path, kill_after):
    full = str(tmp_path / "full")
    counter = kill_after(None)
    main_al.main([*DEEPAL, "--out", full])
    writes, expected = counter.count, outcome(full)
    assert writes >= 3 + 4 * 3  # config, cycles, state; per cycle labeled, checkpoint, cycles, state
    for n in range(1, writes + 1):
        out = str(tmp_path / f"stop{n}")
        kill_after(n)
        with pytest.raises(Killed):
            main_al.main([*DEEPAL, "--out", out])
        kill_after(None)
        main_al.main([*DEEPAL, "--out", out, "--resume"])
        assert outcome(out) == expected, f"stopped after write {n}"


@pytest.mark.slow
@pytest.mark.parametrize("run,argv,target", [
    (main_TOD.main, ["--config", "digits", "--epochs", "1", "--cycles", "2", "--trials", "1", "--quiet"], "trial0.pt"),
    (main_al.main, ["--dataset", "digits", "--al-method", "random", "--arch", "lenet", "--epochs", "1",
                    "--al-budget", "20", "--al-nb-cycles", "2", "--quiet"], "trial0.pt"),
    (main_al.main, ["--dataset", "digits", "--al-method", "random", "--arch", "lenet", "--epochs", "1",
                    "--al-budget", "20", "--al-nb-cycles", "2", "--quiet"], "cycles.csv"),
    (AL_center_temperature.main, ["--dataset", "digits", "--known-class", "5", "--init-percent", "8",
                                  "--query-batch", "20", "--max-epoch", "1", "--max-query", "2", "--quiet",
                                  "--set", "WIDTH=8", "--known-T", "0.5", "--unknown-T", "0.5"], "trial0.pt"),
    (main_LL4AL.main, ["--config", "digits", "--epochs", "1", "--cycles", "2", "--trials", "1", "--quiet", "--set",
                       "WIDTH=8"], "trial0.pt"),
    (AL_center.main, ["--dataset", "digits", "--known-class", "5", "--init-percent", "8", "--query-batch", "20",
                      "--max-epoch", "1", "--max-query", "2", "--quiet", "--set", "WIDTH=8"], "trial0.pt"),
    (main_al.main, [*DEEPAL[:-3], "--cycles", "2", "--quiet"], "cycles.csv"),
])
def test_a_stop_after_the_checkpoint_resumes_in_every_loop(tmp_path, kill_after, run, argv, target):
    """The stop that made runs unresumable: after cycle 1's checkpoint (or its cycles.csv row),
    before its state.json."""
    full, out = str(tmp_path / "full"), str(tmp_path / "cut")
    argv = [*argv, "--data-root", str(tmp_path / "data"), "--device", "cpu"]  # (Rethinking: its split files there)
    counter = kill_after(None)
    run([*argv, "--out", full])
    expected = outcome(full)
    # cycle 1's checkpoint; or its cycles.csv row (the first cycles.csv is the empty one of the start)
    n = [i for i, name in enumerate(counter.names, start=1) if name == target][2 if target == "cycles.csv" else 1]
    kill_after(n)
    with pytest.raises(Killed):
        run([*argv, "--out", out])
    kill_after(None)
    run([*argv, "--out", out, "--resume"])
    assert outcome(out) == expected


@pytest.mark.slow
def test_active_main_stopped_after_a_cycles_checkpoint_resumes(tmp_path, kill_after):
    tiny = ["--dataset", "digits", "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8",
            "--quiet", "--device", "cpu"]
    for mode, shift in (("senmatic", "none"), ("feature", "rotation")):
        contrast_main.main([*tiny, "--mode", mode, "--shift_trans_type", shift, "--batch_size", "32", "--epoch", "1",
                            "--warmup", "0", "--logdir", str(tmp_path / mode)])
    argv = [*tiny, "--target", "4", "--ood_samples", "2", "--split", "2", "--epochs", "1", "--set",
            "CLASSIFIER_SEEDS=1", "--load_feature_path", str(tmp_path / "feature" / "last.model"),
            "--load_senmatic_path", str(tmp_path / "senmatic" / "last.model")]
    counter = kill_after(None)
    active_main.main([*argv, "--out", str(tmp_path / "full")])
    expected = outcome(str(tmp_path / "full"))
    kill_after([i for i, name in enumerate(counter.names, start=1) if name == "trial0.pt"][1])
    with pytest.raises(Killed):
        active_main.main([*argv, "--out", str(tmp_path / "cut")])
    kill_after(None)
    active_main.main([*argv, "--out", str(tmp_path / "cut"), "--resume"])
    assert outcome(str(tmp_path / "cut")) == expected


@pytest.mark.slow
def test_contrast_training_stopped_between_its_files_resumes(tmp_path, kill_after):
    common = ["--dataset", "digits", "--model", "resnet18", "--mode", "feature", "--shift_trans_type", "rotation",
              "--batch_size", "64", "--epoch", "2", "--save_step", "1", "--known-classes", "0,1",
              "--max-train-samples", "400", "--set", "WIDTH=8", "--warmup", "0", "--quiet", "--device", "cpu"]
    contrast_main.main([*common, "--logdir", str(tmp_path / "full")])
    for n in (1, 2):  # after the first last.optim; after the first last.model
        cut = tmp_path / f"cut{n}"
        kill_after(n)
        with pytest.raises(Killed):
            contrast_main.main([*common, "--logdir", str(cut)])
        kill_after(None)
        contrast_main.main([*common, "--logdir", str(cut), "--resume_path", str(cut)])
        full = torch.load(tmp_path / "full" / "last.model", weights_only=True)
        resumed = torch.load(cut / "last.model", weights_only=True)
        assert all(torch.equal(full[k], resumed[k]) for k in full), n
        assert torch.load(cut / "last.config", weights_only=True)["epoch"] == 2


# ----------------------------------------------------------------------------- the folder

IDENTITY = {"script": "x.py", "SEED": 0}


def commit(run, cycle, labeled):
    return run.commit(0, cycle, labeled, np.array([100 + cycle]), 50.0, {"train_seconds": 1.0},
                      {"weights": torch.ones(2) * cycle})


def test_a_second_run_into_the_same_folder_stops_with_one_line(tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
                               "from utils.core.results import ResultsFolder; ResultsFolder(sys.argv[2]).lock(); "
                               "print('held', flush=True); time.sleep(60)",
                               os.path.dirname(os.path.dirname(os.path.abspath(__file__))), str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="another run is writing to"):
            Run(str(out), {"settings": IDENTITY}, IDENTITY)
        assert os.listdir(out) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    Run(str(out), {"settings": IDENTITY}, IDENTITY).close()  # released by the holder's death


def test_leftover_temp_files_are_removed_when_a_run_starts(tmp_path):
    out = tmp_path / "run"
    run = Run(str(out), {"settings": IDENTITY}, IDENTITY)
    commit(run, 0, np.array([1, 2]))
    run.close()
    (out / "checkpoints" / ".tmp-abcdtrial0.pt").write_bytes(b"half a checkpoint")
    (out / ".tmp-xyzcycles.csv").write_text("trial")
    Run(str(out), {"settings": IDENTITY}, IDENTITY, resume=True).close()
    assert not [n for _, _, names in os.walk(out) for n in names if n.startswith(".tmp-")]


def test_files_are_written_with_the_users_umask(tmp_path):
    out = tmp_path / "run"
    run = Run(str(out), {"settings": IDENTITY}, IDENTITY)
    commit(run, 0, np.array([1, 2]))
    run.close()
    from utils.core import results

    expected = 0o666 & ~results._UMASK
    for name in ("config.json", "cycles.csv", "state.json", "checkpoints/trial0.pt", "labeled/trial0_cycle0.npy"):
        assert os.stat(out / name).st_mode & 0o777 == expected, name


def test_a_full_disk_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    import errno

    from utils.core.results import write_text

    path = tmp_path / "state.json"
    path.write_text("old")

    def full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="no space left to write"):
        write_text(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_a_folder_without_a_finished_cycle_is_started_over(tmp_path, capsys):
    out = tmp_path / "run"
    Run(str(out), {"settings": IDENTITY}, IDENTITY).close()  # e.g. stopped by an error in cycle 0
    Run(str(out), {"settings": {**IDENTITY, "SEED": 1}}, {**IDENTITY, "SEED": 1}).close()
    assert "starting over" in capsys.readouterr().out
    Run(str(tmp_path / "new"), {"settings": IDENTITY}, IDENTITY, resume=True).close()
    assert "holds no run yet" in capsys.readouterr().out


@pytest.mark.parametrize("damage,message", [
    (lambda out: np.save(out / "labeled" / "trial0_cycle0.npy", np.array([7, 7])), "missing or changed"),
    (lambda out: os.remove(out / "labeled" / "trial0_cycle0.npy"), "missing or changed"),
    (lambda out: torch.save({"cycle": 0}, out / "checkpoints" / "trial0.pt"), "does not belong"),
    (lambda out: (out / "state.json").write_text('{"identity": {}, "finished": {"0": "x"}}'), "corrupt"),
    (lambda out: (out / "checkpoints" / "trial0.pt").write_bytes(b"\x80garbage"), "unreadable or corrupt"),
])
def test_damaged_or_foreign_resume_files_are_refused_with_one_line(tmp_path, damage, message):
    out = tmp_path / "run"
    run = Run(str(out), {"settings": IDENTITY}, IDENTITY)
    commit(run, 0, np.array([1, 2]))
    run.close()
    damage(out)
    with pytest.raises(UserError, match=message) as err:
        Run(str(out), {"settings": IDENTITY}, IDENTITY, resume=True)
    assert "\n" not in str(err.value)


def test_a_checkpoint_from_another_run_is_refused(tmp_path):
    runs = []
    for name, labeled in (("a", [1, 2]), ("b", [3, 4])):
        run = Run(str(tmp_path / name), {"settings": IDENTITY}, IDENTITY)
        commit(run, 0, np.array(labeled))
        run.close()
        runs.append(tmp_path / name)
    shutil.copy(runs[1] / "checkpoints" / "trial0.pt", runs[0] / "checkpoints" / "trial0.pt")
    with pytest.raises(UserError, match="does not belong"):
        Run(str(runs[0]), {"settings": IDENTITY}, IDENTITY, resume=True)


def test_out_naming_a_file_is_one_line(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Run(str(path), {"settings": IDENTITY}, IDENTITY)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_two_process_run_stopped_after_a_cycle_resumes_to_the_uninterrupted_run(tmp_path):
    """Under torchrun every rank scores its shard of the pool with its own copy of the models, and a
    resumed run gives every rank rank 0's checkpoint: the copies must be rank 0's in the
    uninterrupted run too, BatchNorm statistics included (TOD scores with the previous cycle's
    model, so rank 1's own statistics reordered the resumed query). ``--cycles 1`` stops the run
    after cycle 0's commit, as a kill there does."""
    from conftest import run_script

    common = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main_TOD.py", "--config", "digits",
              "--epochs", "1", "--trials", "1", "--quiet", "--device", "cpu"]
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    for argv in (["--cycles", "2", "--out", full], ["--cycles", "1", "--out", cut],
                 ["--cycles", "2", "--out", cut, "--resume"]):
        result = run_script(*common, *argv)
        assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es) on cpu" in result.stdout and "resuming" in result.stdout
    assert outcome(cut) == outcome(full)
