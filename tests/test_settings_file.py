"""Settings files: --config-file FILE.yaml on every script (the keys of --set, typed and bounded the
same way, flags and --set winning), the results folder's settings.yaml that repeats a run, and the
paper settings shipped under config/paper/."""

import glob
import os

import numpy as np
import pytest
import yaml
from conftest import ROOT

import active_main
import main_al
import main_TOD
from utils.core.cli import run_cli
from utils.core.errors import UserError
from utils.protocols import lfosa

PAPER = {"tod_cifar10": main_TOD.parse_args, "rethinking_cifar10_b100": main_al.parse_args,
         "ccal_cifar10_mismatch0.3": active_main.parse_args, "toolkit_cifar10_badge": main_al.parse_args,
         "lfosa_cifar10_mismatch0.2": lambda argv: lfosa.parse_args(argv, "AL_center_temperature.py")}


def write(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def bad(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_TOD.main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_a_file_sets_keys_as_set_does_and_flags_win(tmp_path):
    path = write(tmp_path, "config: digits\nlr: 0.05\nMILESTONES: [3, 4]\nSTART: '20'\nSEED: 7\n")
    _, cfg = main_TOD.parse_args(["--config-file", path, "--seed", "3", "--set", "START=30"])
    assert (cfg.LR, cfg.MILESTONES, cfg.SEED, cfg.START, cfg.CONFIG) == (0.05, [3, 4], 3, 30, "digits")
    assert cfg.sources["LR"] == path and cfg.sources["SEED"] == "--seed" and cfg.sources["START"] == "--set START"
    assert cfg.EPOCH == 20 and "digits" in cfg.sources["EPOCH"]  # the profile the file's CONFIG picked
    # the file's values are the run's choices: its CONFIG picks the profile, which its own keys override
    _, cfg = main_TOD.parse_args(["--config-file", write(tmp_path, "CONFIG: digits\nEPOCH: 3\n")])
    assert cfg.EPOCH == 3 and cfg.DATASET == "digits"


def test_bad_files_stop_with_one_line_and_write_nothing(tmp_path, capsys):
    out = str(tmp_path / "run")
    cases = {
        "LR: [0.1\n": "not YAML at line 2",
        "- LR\n- 0.1\n": "expected KEY: value lines (settings), got a list",
        "STRAT: 4\n": "main_TOD.py has no setting STRAT",
        "LR: fast\n": "LR=fast: LR expects a number > 0",
        "START: -5\n": "START=-5: START expects an integer >= 1",
        "SAVE_MODEL: maybe\n": "SAVE_MODEL=maybe: SAVE_MODEL expects True or False",
        "START: 2.5\n": "START=2.5: START expects an integer >= 1",
        "MILESTONES: {a: 1}\n": "MILESTONES: expected a value, got a mapping",
        "N_START: 10\n": "N_START is a setting of main_al.py --protocol deepal, not of main_TOD.py",
        "LR: 0.1\nlr: 0.2\n": "LR is given twice (line 2); give it once",
        "LR:\n  value: 0.1\n": "LR: expected a value, got a mapping",
    }
    for text, message in cases.items():
        assert message in bad(["--config-file", write(tmp_path, text), "--out", out], capsys)
    assert "cannot read it" in bad(["--config-file", str(tmp_path / "none.yaml"), "--out", out], capsys)
    assert "--sampling and --set SAMPLING both set SAMPLING" in bad(
        ["--config-file", write(tmp_path, "SAMPLING: TOD\n"), "--sampling", "RANDOM", "--set", "SAMPLING=TOD",
         "--out", out], capsys)
    assert not os.path.exists(out)


def test_main_al_takes_its_protocol_from_the_file(tmp_path):
    path = write(tmp_path, "PROTOCOL: deepal\nDATASET: digits\nSTRATEGY: BadgeSampling\nN_QUERY: 3\n")
    _, cfg = main_al.parse_args(["--config-file", path])
    assert cfg.script == "main_al.py --protocol deepal" and cfg.N_QUERY == 3.0
    with pytest.raises(UserError, match="is a setting of main_al.py --protocol deepal, not of main_al.py --protocol "
                                        "rethinking"):
        main_al.parse_args(["--config-file", path, "--protocol", "rethinking"])


@pytest.mark.parametrize("name", sorted(PAPER))
def test_the_paper_settings_parse(name, capsys):
    path = os.path.join(ROOT, "config", "paper", f"{name}.yaml")
    with pytest.raises(SystemExit) as exit_info:
        PAPER[name](["--config-file", path, "--list-settings"])
    listing = capsys.readouterr().out
    assert exit_info.value.code == 0
    given = yaml.safe_load(open(path))
    assert listing.count(f"({path})") == len(given)  # every key of the file is the file's, none refused


def test_every_paper_file_is_tested():
    shipped = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "config", "paper", "*.yaml"))}
    assert shipped == set(PAPER)


def labeled(out):
    return [np.load(p).tolist() for p in sorted(glob.glob(os.path.join(out, "labeled", "*.npy")))]


@pytest.mark.slow
@pytest.mark.parametrize("script,argv", [
    (main_al, ["--protocol", "deepal", "--dataset", "digits", "--nStart", "5", "--nQuery", "3", "--nEnd", "11",
               "--n_epoch", "1", "--model", "LeNet", "--strategy", "BadgeSampling", "--set", "BATCH_SIZE=32"]),
    (main_TOD, ["--config", "digits", "--epochs", "2", "--cycles", "2", "--set", "WIDTH=8", "--sampling", "TOD"]),
])
def test_settings_yaml_repeats_the_run(tmp_path, script, argv):
    data = ["--data-root", str(tmp_path / "data"), "--quiet"]
    first, again = str(tmp_path / "first"), str(tmp_path / "again")
    script.main([*argv, *data, "--out", first])
    settings = os.path.join(first, "settings.yaml")
    script.main(["--config-file", settings, *data, "--out", again])
    assert labeled(again) == labeled(first) and len(labeled(first)) >= 2
    assert f"python {script.__name__}.py --config-file {settings} --out NEW" in open(settings).read()
    saved = yaml.safe_load(open(settings))
    assert saved == yaml.safe_load(open(os.path.join(again, "settings.yaml")))
    assert saved["DATASET"] == "digits" and (saved.get("STRATEGY") or saved.get("SAMPLING"))
