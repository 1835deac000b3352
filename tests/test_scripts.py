"""End-to-end runs of main_TOD.py and main_LL4AL.py (digits and tiny fake datasets in the real
on-disk formats), resume, torch.distributed launchers, bad input, run.sh and plot.py."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, make_caltech, make_cifar, make_imagenet_weights, make_svhn, run_script

import main_TOD
from utils.core.results import read_config, read_cycles

DIGITS = ["--config", "digits", "--epochs", "1", "--cycles", "2", "--trials", "1", "--quiet"]
TINY = ["--epochs", "1", "--cycles", "2", "--trials", "1", "--quiet", "--set", "START=8", "--set", "ADDENDUM=4",
        "--set", "SUBSET=12", "--set", "BATCH=4"]


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def labeled_sets(out):
    folder = os.path.join(out, "labeled")
    return {name: np.load(os.path.join(folder, name)).tolist() for name in sorted(os.listdir(folder))}


def accuracies(out):
    return [(r["trial"], r["cycle"], r["n_labeled"], r["test_acc"]) for r in read_cycles(out)]


@pytest.mark.slow
@pytest.mark.parametrize("script,sampling,auxiliary", [("main_TOD.py", "TOD", "TOD"), ("main_TOD.py", "RANDOM", "NONE"),
                                                       ("main_LL4AL.py", "LL4AL", "LL4AL")])
def test_scripts_leave_complete_results_on_digits(tmp_path, script, sampling, auxiliary):
    out = str(tmp_path / "run")
    ok(run_script(script, *DIGITS, "--sampling", sampling, "--auxiliary", auxiliary, "--out", out))
    rows = read_cycles(out)
    assert [(r["cycle"], r["n_labeled"]) for r in rows] == [(0, 100), (1, 140)]
    assert all(0 <= r["test_acc"] <= 100 and r["train_seconds"] > 0 for r in rows)
    sets = labeled_sets(out)
    assert [len(s) for s in sets.values()] == [140, 180]
    assert len(set(sets["trial0_cycle1.npy"])) == 180
    assert set(sets["trial0_cycle0.npy"]) < set(sets["trial0_cycle1.npy"])
    config = read_config(out)
    assert config["settings"]["SAMPLING"] == sampling and config["settings"]["EPOCH"] == 1
    assert os.path.isfile(os.path.join(out, "checkpoints", "trial0.pt")) and os.listdir(os.path.join(out, "tb"))


@pytest.mark.slow
def test_resume_after_a_kill_or_with_more_cycles_reproduces_the_run(tmp_path):
    common = ["main_TOD.py", "--config", "digits", "--epochs", "2", "--quiet", "--set", "WIDTH=8", "--device", "cpu"]
    full, grown, killed = (str(tmp_path / name) for name in ("full", "grown", "killed"))
    ok(run_script(*common, "--cycles", "3", "--trials", "2", "--out", full))
    ok(run_script(*common, "--cycles", "2", "--trials", "1", "--out", grown))
    ok(run_script(*common, "--cycles", "3", "--trials", "2", "--out", grown, "--resume"))
    command = [sys.executable, os.path.join(ROOT, common[0]), *common[1:], "--cycles", "3", "--trials", "2",
               "--out", killed]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(killed, "labeled", "trial0_cycle0.npy")
    deadline = time.time() + 120
    while not os.path.exists(first) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = ok(run_script(*common, "--cycles", "3", "--trials", "2", "--out", killed, "--resume"))
    assert "resuming" in resumed.stdout or "starting over" in resumed.stdout  # (stopped before cycle 0 committed)
    assert labeled_sets(grown) == labeled_sets(full) == labeled_sets(killed)
    assert accuracies(grown) == accuracies(full) == accuracies(killed)
    assert len(labeled_sets(full)) == 6


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("launcher,script,flags", [("torch.distributed.run", "main_TOD.py", []),
                                                   ("torch.distributed.launch", "main_LL4AL.py",
                                                    ["--amp", "bf16", "--channels-last"])])
def test_two_process_cpu_run_writes_one_results_folder(tmp_path, launcher, script, flags):
    out = str(tmp_path / "run")
    result = ok(run_script("-m", launcher, "--nproc_per_node=2", "--master_port", str(29500 + os.getpid() % 1000),
                           os.path.join(ROOT, script), *DIGITS, *flags, "--device", "cpu", "--out", out))
    assert "2 process(es) on cpu" in result.stdout
    assert "Grad strides do not match" not in result.stderr  # (channels-last weights before DDP's buckets)
    assert [r["n_labeled"] for r in read_cycles(out)] == [100, 140]
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert [len(s) for s in labeled_sets(out).values()] == [140, 180]


@pytest.mark.slow
def test_seed_commands_run_verbatim_on_the_seed_data_layouts(tmp_path):
    root = str(tmp_path / "data")
    make_cifar(root, n_train=40, n_test=10)
    make_cifar(root, n_train=40, n_test=10, classes=100, hundred=True)
    make_svhn(root, n_train=40, n_test=10)
    make_caltech(root, classes=3, per_class=10)
    make_imagenet_weights(str(tmp_path / "resnet18-5c106cde.pth"))
    commands = [
        ["main_TOD.py", "--config", "cifar10", "--sampling", "TOD", "--auxiliary", "TOD"],
        ["main_TOD.py", "--config", "cifar100", "--sampling", "TOD", "--auxiliary", "NONE"],
        ["main_TOD.py", "--config", "caltech101", "--sampling", "RANDOM", "--auxiliary", "TOD"],
        ["main_LL4AL.py", "--config", "svhn", "--sampling", "LL4AL", "--auxiliary", "LL4AL"],
    ]
    for command in commands:
        out = str(tmp_path / f"run_{command[2]}")
        shrink = TINY if command[2] != "cifar10" else TINY + ["--set", "WIDTH=16"]
        ok(run_script(*command, *shrink, "--data-root", root, "--out", out, cwd=str(tmp_path)))
        assert [r["n_labeled"] for r in read_cycles(out)] == [8, 12], command


@pytest.mark.slow
def test_dataset_flag_keeps_the_config_but_changes_the_data(tmp_path):
    from conftest import write_images

    for part, n in (("train", 30), ("test", 4)):
        for name in ("a", "b"):
            write_images(tmp_path / "images" / part / name, n, (12, 10), seed=ord(name))
    out = str(tmp_path / "run")
    ok(run_script("main_LL4AL.py", *TINY, "--config", "digits", "--dataset", f"folder:{tmp_path / 'images'}",
                  "--set", "IMAGE_SIZE=16", "--out", out))
    assert read_config(out)["settings"]["DATASET"].startswith("folder:")
    assert [r["n_labeled"] for r in read_cycles(out)] == [8, 12]


def bad(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main_TOD.run_cli(lambda: main_TOD.main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert "CONFIG expects one of caltech101, cifar10" in bad(["--config", "cifar11", "--out", out], capsys)
    assert "--download" in bad(["--config", "cifar10", "--data-root", str(tmp_path / "none"), "--out", out], capsys)
    assert "budget larger than the pool" in bad(["--config", "digits", "--set", "START=1400", "--out", out], capsys)
    assert "KEY=VALUE" in bad(["--config", "digits", "--set", "START", "--out", out], capsys)
    assert "has no setting" in bad(["--config", "digits", "--set", "STRAT=4", "--out", out], capsys)
    assert not os.path.exists(out)  # nothing is written before the input is known to be good
    assert "SAMPLING expects one of TOD, RANDOM" in bad(["--sampling", "coreset", "--out", out], capsys)
    assert "LR expects a number" in bad(["--config", "digits", "--set", "LR=fast", "--out", out], capsys)
    assert not os.path.exists(out)


@pytest.mark.slow
def test_resume_errors_and_no_traceback(tmp_path):
    out = str(tmp_path / "run")
    ok(run_script("main_TOD.py", *DIGITS, "--cycles", "1", "--out", out))
    again = run_script("main_TOD.py", *DIGITS, "--cycles", "1", "--out", out)
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    other = run_script("main_TOD.py", *DIGITS, "--sampling", "RANDOM", "--out", out, "--resume")
    assert other.returncode == 2 and "different settings (SAMPLING)" in other.stderr
    with open(os.path.join(out, "state.json"), "w") as fh:
        fh.write("{")
    corrupt = run_script("main_TOD.py", *DIGITS, "--out", out, "--resume")
    assert corrupt.returncode == 2 and "corrupt" in corrupt.stderr and len(corrupt.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_run_sh_falls_back_to_digits_and_forwards_arguments(tmp_path):
    out = str(tmp_path / "run")
    result = subprocess.run(["bash", os.path.join(ROOT, "run.sh"), "--epochs", "1", "--cycles", "1", "--trials", "1",
                             "--quiet", "--out", out], cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "digits" in result.stdout.splitlines()[0]
    assert read_config(out)["settings"]["CONFIG"] == "digits"


def test_plot_draws_accuracy_against_labels_for_several_runs(tmp_path):
    import plot

    for name, shift in (("a", 0.0), ("b", 5.0)):
        out = tmp_path / name
        out.mkdir()
        (out / "cycles.csv").write_text("trial,cycle,n_labeled,test_acc,train_seconds,query_seconds\n"
                                        f"0,0,10,{50 + shift},1,1\n0,1,20,{60 + shift},1,1\n1,0,10,{52 + shift},1,1\n")
        (out / "config.json").write_text(json.dumps({"label": f"run {name}", "script": "main_TOD.py", "settings": {}}))
    xs, mean, std, counts = plot.curve(read_cycles(str(tmp_path / "a")), "test_acc")
    assert xs.tolist() == [10, 20] and mean.tolist() == [51.0, 60.0] and std.tolist() == [1.0, 0.0]
    assert counts == [2, 1]
    figure = str(tmp_path / "fig.png")
    plot.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", figure])
    with open(figure, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("script", ["main_TOD.py", "main_LL4AL.py"])
def test_missing_imagenet_weights_stop_before_anything_is_written(tmp_path, capsys, script):
    import main_LL4AL
    from utils.core.cli import run_cli

    root = str(tmp_path / "data")
    make_caltech(root, classes=3, per_class=10)
    out = tmp_path / "run"
    main = main_TOD.main if script == "main_TOD.py" else main_LL4AL.main
    argv = ["--config", "caltech101", "--data-root", root, *TINY, "--set", f"PRETRAINED={tmp_path / 'none.pth'}",
            "--out", str(out)]
    if script == "main_LL4AL.py":
        argv += ["--sampling", "LL4AL", "--auxiliary", "LL4AL"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "weights not found" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


LFOSA_TINY = ["--dataset", "digits", "--known-class", "5", "--init-percent", "8", "--query-batch", "20",
              "--max-epoch", "1", "--max-query", "2", "--quiet", "--set", "WIDTH=8"]


@pytest.mark.slow
@pytest.mark.parametrize("module,argv,names", [
    ("main_TOD", [*DIGITS, "--set", "WIDTH=8"], ["trial0_cycle0.pt", "trial0_cycle1.pt"]),
    ("main_LL4AL", [*DIGITS, "--set", "WIDTH=8"], ["trial0_cycle0.pt", "trial0_cycle0_loss_module.pt",
                                                    "trial0_cycle1.pt", "trial0_cycle1_loss_module.pt"]),
    ("AL_center", LFOSA_TINY, ["trial0_cycle0.pt", "trial0_cycle1.pt"]),
    ("AL_center_temperature", LFOSA_TINY, ["trial0_cycle0_A.pt", "trial0_cycle0_B.pt", "trial0_cycle1_A.pt",
                                           "trial0_cycle1_B.pt"]),
])
def test_save_models_keeps_every_cycles_weights(tmp_path, module, argv, names):
    import importlib

    import torch

    out = tmp_path / "run"
    importlib.import_module(module).main([*argv, "--save-models", "--out", str(out)])
    assert sorted(os.listdir(out / "models")) == names
    for name in names:
        state = torch.load(out / "models" / name, weights_only=True)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
