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
from utils.core.errors import UserError
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


def _zip_writer_full(*_args, **_kwargs):
    """torch.save on a full disk: its zip writer raises a RuntimeError with the OSError as context."""
    import errno

    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 704 vs 598") from None


def test_a_full_disk_while_a_checkpoint_is_saved_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run = Run(str(out), {"settings": IDENTITY}, IDENTITY)
    commit(run, 0, np.array([1, 2]))
    before = (out / "checkpoints" / "trial0.pt").read_bytes()
    monkeypatch.setattr(torch, "save", _zip_writer_full)
    with pytest.raises(UserError, match="no space left to write .*trial0.pt"):
        commit(run, 1, np.array([1, 2, 3]))
    run.close()
    assert (out / "checkpoints" / "trial0.pt").read_bytes() == before
    assert not [n for _, _, names in os.walk(out) for n in names if n.startswith(".tmp-")]


def test_an_error_that_is_no_write_failure_is_not_reported_as_one(tmp_path):
    from utils.core.results import atomic_write

    def broken(_fh):
        try:
            raise KeyError("x")
        except KeyError:
            raise RuntimeError("a bug") from None

    with pytest.raises(RuntimeError, match="a bug"):
        atomic_write(str(tmp_path / "f"), broken)

    def interrupted(_fh):  # Ctrl-C while a full disk was being handled: still a Ctrl-C (exit 130)
        import errno

        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise KeyboardInterrupt from None

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(tmp_path / "f"), interrupted)


def test_a_full_tmpfs_while_a_checkpoint_is_saved_is_one_line(tmp_path):
    import subprocess

    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'mount failed'}")
    try:
        from utils.core.results import atomic_write

        with pytest.raises(UserError, match="no space left to write"):
            atomic_write(str(disk / "trial0.pt"), lambda fh: torch.save({"w": torch.ones(100_000)}, fh))
        assert os.listdir(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def _ended(pid):
    """Whether process ``pid`` has ended (gone, or a zombie nobody reaps)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_until(condition, seconds):
    import time

    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux's /proc")
def test_the_jobs_of_a_killed_sweep_end_with_it(tmp_path):
    """kill -9 of a --jobs sweep (as a scheduler does) ends its processes, which would otherwise go on
    holding their folders' locks."""
    import signal
    import subprocess
    import sys

    child = tmp_path / "child.py"
    child.write_text("import sys, time\nsys.path.insert(0, sys.argv[1])\nfrom utils.core.sweep import end_with_parent\n"
                     "end_with_parent()\nprint('ready', flush=True)\ntime.sleep(120)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sweep = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from utils.core.sweep import Job, run_jobs"
         "; run_jobs([Job(n, sys.argv[2] + '/' + n, [sys.argv[1]]) for n in 'ab'], 2, sys.argv[3], None, print)",
         root, str(tmp_path), str(child)], stdout=subprocess.PIPE, text=True)
    try:
        assert _wait_until(lambda: len(_children(sweep.pid)) == 2 and
                           all("ready" in (tmp_path / f"{n}.log").read_text() for n in "ab"), 60)
        jobs = _children(sweep.pid)
    finally:
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
    _expect_ended(jobs)


def _expect_ended(jobs):
    """The processes ``jobs`` end within 10 s of their sweep being killed (any left are killed)."""
    import signal

    try:
        assert _wait_until(lambda: all(_ended(pid) for pid in jobs), 10), "the sweep's jobs outlived it"
    finally:
        for pid in jobs:
            if not _ended(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_failed_sweep_job_is_reported_with_its_own_error_line(tmp_path):
    from utils.core.sweep import Job, run_jobs

    child = tmp_path / "child.py"
    child.write_text("import sys\nprint('[trial0/cycle0] train epoch 1/1')\n"
                     "if sys.argv[1] == 'a':\n    print('error: --out x/a is a file, not a folder', file=sys.stderr)\n"
                     "    sys.exit(2)\nraise ValueError('a bug')\n")
    (tmp_path / "a.log").write_text("error: an older run's error\n")
    lines = []
    with pytest.raises(UserError, match="2 strategy run"):
        run_jobs([Job(n, str(tmp_path / n), [n]) for n in "ab"], 2, str(child), None, lines.append)
    failed = sorted(line for line in lines if " failed (" in line)
    assert failed[0].startswith("sweep: a failed (exit 2): error: --out x/a is a file, not a folder (log ")
    assert failed[1].startswith("sweep: b failed (exit 1): ValueError: a bug (log ")


@pytest.mark.slow
def test_main_al_sweep_jobs_end_with_the_sweep(tmp_path):
    import signal
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "sweep"
    sweep = subprocess.Popen([sys.executable, os.path.join(ROOT, "main_al.py"), *DEEPAL[:6], "--strategy",
                              "RandomSampling,EntropySampling", *DEEPAL[8:14], "--n_epoch", "10000", "--jobs", "2",
                              "--out", str(out)], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, text=True)
    try:
        assert _wait_until(lambda: len(_children(sweep.pid)) == 2, 60)
        jobs = _children(sweep.pid)
        assert _wait_until(lambda: all((out / n / ".lock").exists() for n in ("RandomSampling", "EntropySampling")),
                           60)
    finally:
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
    _expect_ended(jobs)


def test_resume_without_the_checkpoint_refuses_before_it_writes(tmp_path):
    out = tmp_path / "run"
    run = Run(str(out), {"settings": IDENTITY}, IDENTITY)
    commit(run, 0, np.array([1, 2]))
    run.close()
    os.remove(out / "checkpoints" / "trial0.pt")
    before = {name: (out / name).read_bytes() for name in ("config.json", "state.json", "cycles.csv")}
    with pytest.raises(UserError, match="trial0.pt") as err:
        Run(str(out), {"settings": IDENTITY, "run": {"command": "another"}}, IDENTITY, resume=True).restore(0)
    assert "\n" not in str(err.value)
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_contrast_training_stopped_at_its_first_save_starts_over_with_resume_path(tmp_path, monkeypatch, capsys):
    """A stop before the first last.optim was renamed into place leaves a folder with nothing to
    resume: --resume_path on it starts over (as --resume does in the other scripts) and says so."""
    common = ["--dataset", "digits", "--model", "resnet18", "--mode", "feature", "--shift_trans_type", "rotation",
              "--batch_size", "64", "--epoch", "1", "--known-classes", "0,1", "--max-train-samples", "400",
              "--set", "WIDTH=8", "--warmup", "0", "--quiet"]
    cut = tmp_path / "cut"

    def killed(_src, dst):
        raise Killed(dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        with pytest.raises(Killed):
            contrast_main.main([*common, "--logdir", str(cut)])
    assert not (cut / "last.optim").exists()
    capsys.readouterr()
    contrast_main.main([*common, "--logdir", str(cut), "--resume_path", str(cut)])
    assert "holds no saved encoder yet" in capsys.readouterr().out
    assert torch.load(cut / "last.config", weights_only=True)["epoch"] == 1
    with pytest.raises(UserError, match="not found"):  # another folder without a save is still refused
        contrast_main.resume_state(str(tmp_path / "new"), str(tmp_path / "elsewhere"), {})
