"""Every entry script with ``--device cuda`` under the emulated CUDA (tests/fake_cuda.py), on digits or a tiny
synthetic CIFAR-10 with one-epoch cycles: the device-sensitive strategies and methods, under --amp bf16 and
fp16 (fp16: the CUDA loss scaler, emulated by an enabled CPU one). ``bash tests/run.sh -m fake_cuda`` runs them."""

import os

import pytest
import torch
from conftest import make_cifar, run_main
from fake_cuda import FakeCuda, training_syncs

from utils.core.results import read_cycles

pytestmark = [pytest.mark.fake_cuda, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TOD = ["--config", "digits", "--epochs", "1", "--cycles", "2", "--trials", "1", "--quiet", "--set", "WIDTH=8",
       "--max-train-samples", "300", "--set", "START=40", "--set", "ADDENDUM=20", "--set", "SUBSET=60"]
DEEPAL = ["--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--nStart", "10", "--nQuery", "5",
          "--nEnd", "20", "--n_epoch", "1", "--quiet", "--max-train-samples", "200", "--max-test-samples", "50"]
RETHINKING = ["--protocol", "rethinking", "--dataset", "digits", "--arch", "lenet", "--split", "0", "--al-budget",
              "20", "--epochs", "1", "--cycles", "2", "--max-train-samples", "300", "--max-test-samples", "100",
              "--quiet"]
CCAL = ["--dataset", "digits", "--known-classes", "0,1", "--max-train-samples", "400", "--set", "WIDTH=8", "--quiet"]
LFOSA = ["--dataset", "digits", "--known-class", "5", "--init-percent", "8", "--query-batch", "20", "--max-epoch", "1",
         "--max-query", "2", "--quiet", "--set", "WIDTH=8", "--max-train-samples", "400", "--weight-cent", "0.1"]

CASES = {
    "TOD fp16 channels-last": ("main_TOD.py", [*TOD, "--amp", "fp16", "--channels-last"]),
    "TOD bf16": ("main_TOD.py", [*TOD, "--amp", "bf16"]),
    "LL4AL fp16": ("main_LL4AL.py", [*TOD, "--amp", "fp16"]),
    "BADGE bf16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "BadgeSampling", "--amp", "bf16"]),
    "BatchBALD fp16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "BatchBALD", "--set", "MC_SAMPLES=4",
                                                        "--amp", "fp16"]),
    "k-center": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "KCenterGreedy"]),
    "UncertainGCN fp16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "UncertainGCN", "--amp", "fp16"]),
    "ASAL": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "ASAL", "--asal_steps", "3"]),
    "VAAL fp16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "VAAL", "--set", "VAE_WIDTH=8",
                                                   "--amp", "fp16"]),
    "WAAL fp16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "WAAL", "--amp", "fp16"]),
    "MC dropout bf16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "BALDDropout", "--set",
                                                         "MC_SAMPLES=4", "--amp", "bf16"]),
    "DeepFool fp16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "AdversarialDeepFool", "--amp",
                                                       "fp16"]),
    "FixMatch fp16": ("main_al.py --protocol deepal", [*DEEPAL, "--strategy", "EntropySampling", "--ssl", "fixmatch",
                                                       "--set", "SSL_MU=2", "--amp", "fp16"]),
    "label propagation fp16": ("main_al.py --protocol rethinking", [
        *RETHINKING, "--al-method", "coreset", "--add-lp", "True", "--b", "128", "--labeled-batch-size", "50",
        "--amp", "fp16"]),
    "DeepCluster bf16": ("main_al.py --protocol rethinking", [
        *RETHINKING, "--al-method", "random", "--learn-unsupervised-pretraining", "True", "--pretrain-epochs", "1",
        "--add-lp", "True", "--b", "64", "--lp-mode", "uniform", "--amp", "bf16"]),
    "AL_center fp16": ("AL_center.py", [*LFOSA, "--amp", "fp16"]),
    "LfOSA bf16": ("AL_center_temperature.py", [*LFOSA, "--known-T", "0.5", "--unknown-T", "0.5", "--amp", "bf16"]),
}


def on_fake_cuda(script, argv, capsys):
    """(exit code, stdout, stderr) of ``script``'s main(argv + --device cuda) under the emulation."""
    with FakeCuda():
        return run_main(script, [*argv, "--device", "cuda"], capsys)


@pytest.mark.parametrize("case", list(CASES))
def test_script_runs_on_emulated_cuda(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # (DeepCluster writes ./pretrained)
    script, argv = CASES[case]
    out = str(tmp_path / "run")
    code, stdout, stderr = on_fake_cuda(script, [*argv, "--data-root", str(tmp_path / "data"), "--out", out], capsys)
    assert code == 0, stderr
    assert "cuda:0" in stdout  # (the script saw the emulated device)
    assert len(read_cycles(out)) >= 2


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """contrast_main.py's two encoders, trained on the emulated CUDA (fp16 and bf16)."""
    folder = tmp_path_factory.mktemp("encoders")
    for mode, shift, name, amp in (("senmatic", "none", "semantic", "fp16"),
                                   ("feature", "rotation", "distinctive", "bf16")):
        argv = [*CCAL, "--mode", mode, "--shift_trans_type", shift, "--batch_size", "32", "--epoch", "1",
                "--warmup", "0", "--amp", amp, "--logdir", str(folder / name), "--device", "cuda"]
        with FakeCuda():
            import contrast_main

            contrast_main.main(argv)
        assert os.path.isfile(folder / name / "last.model")
    return folder


def test_ccal_runs_on_emulated_cuda(encoders, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = [*CCAL, "--mode", "eval", "--model", "resnet18", "--mismatch", "0.8", "--target", "4", "--ood_samples", "2",
            "--load_feature_path", str(encoders / "distinctive" / "last.model"),
            "--load_senmatic_path", str(encoders / "semantic" / "last.model"), "--split", "2", "--epochs", "1",
            "--set", "CLASSIFIER_SEEDS=1", "--amp", "fp16", "--out", out]
    code, stdout, stderr = on_fake_cuda("active_main.py", argv, capsys)
    assert code == 0, stderr
    assert "cuda:0" in stdout and read_cycles(out)


def test_tod_host_syncs_per_training_step(tmp_path, capsys):
    """TOD on a CIFAR-shaped set (random crops and flips): the host syncs inside its training windows per
    step, counted by line. Today 7 per step (the blocking copies of images, targets, crop offsets and flip
    masks) and one per epoch (the epoch's summed loss); the figure may only go down."""
    import main_TOD
    from utils.core.cli import run_cli

    root = make_cifar(str(tmp_path / "data"), n_train=120, n_test=20)
    argv = ["--config", "cifar10", "--epochs", "1", "--cycles", "1", "--trials", "1", "--quiet", "--set", "WIDTH=8",
            "--set", "START=64", "--set", "ADDENDUM=8", "--set", "SUBSET=16", "--set", "BATCH=16",
            "--data-root", root, "--out", str(tmp_path / "run"), "--device", "cuda"]
    per_step, steps, mode = training_syncs(lambda: run_cli(lambda: main_TOD.main(argv)))
    assert steps == 4  # 64 labeled images, batches of 16
    assert per_step <= 7 + 1 / steps, mode.sync_report()
    assert all(path == "main_TOD.py" or path.startswith("utils/") for path, _line, _kind in mode.syncs)
    assert torch.ones(1).device.type == "cpu"  # (the emulation ended with the run)
