"""One configuration system for every script (utils/core/config.py, config/): typed keys, --set and
--list-settings checked when the command line is parsed, epoch-based keys scaled by --epochs, every
key read by its script, IMAGE_SIZE for image files."""

import ast
import importlib
import inspect
import json
import os

import pytest
from conftest import ENTRY, ROOT, run_main, write_images

import config
from utils.core.config import Key, Settings, Tree, resolve
from utils.core.errors import UserError


def test_every_script_has_a_tree_and_an_entry_here():
    assert set(ENTRY) == set(config.SCRIPTS)


def bad_values(script):
    """An unknown key, a value of the wrong type, and a key of another script."""
    tree = config.tree(script)
    typed = next(k for k, key in tree.keys.items() if key.type in ("int", "float") and not key.flags)
    other = next(k for k in tree.others if k not in tree.keys)
    return [("NO_SUCH_KEY=1", "has no setting NO_SUCH_KEY"), (f"{typed}=fast", f"{typed} expects"),
            (f"{other}=1", f"{other} is a setting of {tree.others[other]}")]


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_a_bad_set_stops_with_one_line_before_anything_is_written(script, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders would appear here
    _, argv, folder_flag = ENTRY[script]
    out = tmp_path / "out"
    for assignment, message in bad_values(script):
        code, _, err = run_main(script, [*argv, "--set", assignment, folder_flag, str(out)], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (script, assignment, err)
        assert "Traceback" not in err
        assert os.listdir(tmp_path) == [], (script, os.listdir(tmp_path))


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_list_settings_prints_every_key_with_its_value_and_comment_and_exits_0(script, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, argv, _ = ENTRY[script]
    code, out, err = run_main(script, [*argv, "--list-settings", "--set", "SEED=3"], capsys)
    assert code == 0 and not err
    lines = {line.split("=")[0].strip(): line for line in out.splitlines()[1:]}
    tree = config.tree(script)
    assert set(lines) == set(tree.keys)
    for key, key_def in tree.keys.items():
        assert f"# {key_def.help}" in lines[key]
    assert lines["SEED"].split("=")[1].split("#")[0].strip() == "3" and "(--set SEED)" in lines["SEED"]
    assert os.listdir(tmp_path) == []  # nothing read or written (no data, no folder)


# ----------------------------------------------------------------------------- every key does something

PROJECT = ("config", "models", "utils")
OTHER_PROTOCOL = {"main_al.py --protocol deepal": {"utils.protocols.rethinking", "config.rethinking"},
                  "main_al.py --protocol rethinking": {"utils.protocols.deepal"}}


def module_file(name):
    path = os.path.join(ROOT, *name.split("."))
    return path + ".py" if os.path.isfile(path + ".py") else os.path.join(path, "__init__.py")


def imported_modules(path):
    """The project modules ``path`` imports (any import statement, at any depth)."""
    names = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in PROJECT and os.path.isfile(module_file(n))}


def reachable(script):
    """Source files of the entry script of ``script`` and every project module it reaches."""
    entry = os.path.join(ROOT, ENTRY[script][0] + ".py")
    tree_module = f"config.{config.SCRIPTS[script][0]}"  # config/__init__.py imports it by name
    seen, todo, files = set(), [*imported_modules(entry), tree_module], {entry}
    while todo:
        name = todo.pop()
        if name in seen or name in OTHER_PROTOCOL.get(script, ()):
            continue
        seen.add(name)
        files.add(module_file(name))
        todo.extend(imported_modules(module_file(name)))
    return files


def names_read(path):
    """Attribute names (``cfg.KEY``) and string subscripts (``cfg["KEY"]``) read in ``path``."""
    read = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            read.add(node.attr)
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            read.add(node.slice.value)
    return read


def profile_reads(path):
    """Keys read by the profile (``_profile``) of a config module: they choose values there."""
    functions = [n for n in ast.walk(ast.parse(open(path).read())) if isinstance(n, ast.FunctionDef)
                 and n.name == "_profile"]
    return {node.slice.value for f in functions for node in ast.walk(f)
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)}


def strategy_key_readers(key):
    """The files that read a strategy's setting ``key``: the module of each strategy declaring it (as
    ``ctx.params.<short name>``) and of its training hook (as the key's name)."""
    from utils.samplers import get_strategy, list_strategies

    files = {}
    for name in list_strategies():
        strategy = get_strategy(name)
        rule = inspect.unwrap(strategy.scores or strategy.positions)
        if key in strategy.params:
            files[inspect.getsourcefile(rule)] = key[len(strategy.prefix) + 1:].lower()
        if strategy.training is not None and key in strategy.training.PARAMS:
            files[inspect.getsourcefile(strategy.training)] = key
    return files


def query_context_keywords(path):
    """The keyword arguments of every QueryContext(...) call in ``path``."""
    return {k.arg for node in ast.walk(ast.parse(open(path).read())) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "QueryContext" for k in node.keywords}


def strings_used(path):
    return {node.value for node in ast.walk(ast.parse(open(path).read()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_every_key_is_read_by_the_code_of_its_script(script):
    """A key that no code of its script reads (outside config/, where values are only declared and
    checked; a profile's choice of values counts) would be an option that silently does nothing.
    A query strategy's setting is read by its rule (``ctx.params.<name>``) or its training hook, and
    the script hands the strategy its settings (``QueryContext(..., settings=cfg)``)."""
    tree = config.tree(script)
    files = reachable(script)
    in_config = {f for f in files if os.path.relpath(f, ROOT).startswith("config" + os.sep)}
    read = set().union(*(names_read(f) for f in files - in_config), *map(profile_reads, in_config))
    unread = sorted(k for k in set(tree.keys) - read if k not in tree.owners)
    assert not unread, f"{script}: no code reads {', '.join(unread)}"
    if tree.owners:
        assert any("settings" in query_context_keywords(f) for f in files), f"{script} never hands its strategy " \
            "the settings (QueryContext(..., settings=cfg))"
    for key in tree.owners:
        readers = strategy_key_readers(key)
        assert readers and all({name, key} & (names_read(f) | strings_used(f)) for f, name in readers.items()), \
            f"{script}: {key} is read by none of its strategies' rules ({', '.join(readers)})"


def test_the_walk_would_catch_an_unread_key():
    assert "QUERY_ROTATIONS" in names_read(module_file("utils.samplers.ccal")) | names_read(
        module_file("utils.protocols.ccal")) | names_read(os.path.join(ROOT, "active_main.py"))
    assert "NO_SUCH_KEY" not in set().union(*(names_read(f) for f in reachable("main_TOD.py")))


# ----------------------------------------------------------------------------- typing and resolution

def small_tree(**extra):
    keys = {"EPOCHS": Key(100, "epochs", minimum=1, flags=("--n_epoch", "--epochs")),
            "MILESTONES": Key([80, 120], "milestones", per_epochs="EPOCHS"),
            "RAMP": Key(0, "warm-up epochs", per_epochs="EPOCHS"),
            "LR": Key(0.1, "learning rate", minimum=0),
            "FLIP": Key(None, "flips", type="bool"),
            "NAME": Key("a", "a choice", choices={"a": "a", "alpha": "a", "b": "b"}),
            "SIZES": Key(None, "sizes", type="list[int]", minimum=1),
            "CYCLES": Key(3, "cycles", resumable=True), **extra}
    return Tree("demo.py", keys, epochs_key="EPOCHS", others={"WEIGHT": "main_TOD.py"})


def test_values_are_typed_from_every_source():
    cfg = resolve(small_tree(), {}, ["lr=1", "FLIP=no", "NAME=Alpha", "SIZES=[4, 8]", "MILESTONES=5,6"])
    assert (cfg.LR, cfg.FLIP, cfg.NAME, cfg.SIZES, cfg.MILESTONES) == (1.0, False, "a", [4, 8], [5, 6])
    assert isinstance(cfg.LR, float) and cfg.sources["LR"] == "--set LR"
    for assignment, expected in [("LR=fast", "LR expects a number >= 0"), ("LR=-1", "LR expects a number >= 0"),
                                 ("EPOCHS=1.5", "EPOCHS expects an integer >= 1"), ("FLIP=maybe", "True or False"),
                                 ("NAME=c", "one of a, b"), ("SIZES=[0]", "list of integers"),
                                 ("CYCLES=None", "an integer"), ("FLIP=None", "")]:
        if expected:
            with pytest.raises(UserError, match=expected.replace("[", r"\[")):
                resolve(small_tree(), {}, [assignment])
        else:
            assert resolve(small_tree(), {}, [assignment]).FLIP is None
    with pytest.raises(UserError, match="KEY=VALUE"):
        resolve(small_tree(), {}, ["LR"])
    with pytest.raises(UserError, match="WEIGHT is a setting of main_TOD.py, not of demo.py"):
        resolve(small_tree(), {}, ["WEIGHT=1"])
    with pytest.raises(UserError, match="--n_epoch and --set EPOCHS both set EPOCHS"):
        resolve(small_tree(), {"--n_epoch": "3"}, ["EPOCHS=4"])
    with pytest.raises(UserError, match="--n_epoch and --epochs both set EPOCHS"):
        resolve(small_tree(), {"--n_epoch": "3", "--epochs": "4"}, [])


def test_settings_are_frozen_and_know_their_identity():
    cfg = resolve(small_tree(), {}, [])
    with pytest.raises(AttributeError, match="frozen"):
        cfg.LR = 1.0
    assert isinstance(cfg, Settings) and "CYCLES" not in cfg.identity() and cfg.identity()["LR"] == 0.1


def test_epochs_scale_epoch_counts_but_the_seed_flag_and_explicit_values_do_not():
    scaled = resolve(small_tree(), {"--epochs": "20"}, [])
    assert scaled.EPOCHS == 20 and scaled.MILESTONES == [16, 24] and scaled.RAMP == 0
    assert scaled.scaled["MILESTONES"] == {"from": [80, 120], "to": [16, 24], "key": "EPOCHS", "base": 100,
                                           "epochs": 20}
    assert "MILESTONES [80, 120] -> [16, 24]" in scaled.notes()[0]
    assert resolve(small_tree(), {"--n_epoch": "20"}, []).MILESTONES == [80, 120]  # the seed's flag: as the seed
    assert resolve(small_tree(), {"--epochs": "20"}, ["MILESTONES=[3]"]).MILESTONES == [3]
    assert resolve(small_tree(), {"--epochs": "1"}, []).MILESTONES == [1, 1]  # a positive count stays >= 1


def test_tod_epochs_scale_milestones_and_the_ll4al_detach_epoch():
    import main_LL4AL
    import main_TOD

    _, tod = main_TOD.parse_args(["--config", "cifar10", "--epochs", "20"])
    assert tod.EPOCH == 20 and tod.MILESTONES == [16]
    _, ll4al = main_LL4AL.parse_args(["--config", "cifar10", "--epochs", "20"])
    assert ll4al.MILESTONES == [16] and ll4al.EPOCHL == 12
    _, kept = main_LL4AL.parse_args(["--config", "cifar10", "--epochs", "20", "--set", "EPOCHL=20"])
    assert kept.EPOCHL == 20 and kept.sources["EPOCHL"] == "--set EPOCHL"
    _, digits = main_TOD.parse_args(["--config", "digits"])
    assert digits.EPOCH == 20 and digits.sources["EPOCH"] == "config digits" and not digits.scaled


def test_deepal_epochs_scale_the_schedule_and_mnist_keeps_the_toolkit_milestones():
    import main_al

    base = ["--protocol", "deepal", "--strategy", "EntropySampling"]
    _, cfg = main_al.parse_args([*base, "--epochs", "20"])
    assert cfg.N_EPOCH == 20 and cfg.SCHEDULE == [16, 24] and cfg.LL_DETACH_EPOCH == 24
    _, seed = main_al.parse_args([*base, "--n_epoch", "20"])
    assert seed.SCHEDULE == [80, 120]  # the toolkit's own flag: its schedule, as the toolkit
    _, mnist = main_al.parse_args([*base, "--dataset", "mnist"])
    assert mnist.SCHEDULE == [20, 40] and mnist.BATCH_SIZE == 128 and mnist.sources["BATCH_SIZE"] == "toolkit mnist"
    _, chosen = main_al.parse_args([*base, "--dataset", "mnist", "--schedule", "5", "7"])
    assert chosen.SCHEDULE == [5, 7]


@pytest.mark.slow
def test_scaling_is_logged_and_recorded_in_config_json(tmp_path):
    from conftest import run_script

    out = str(tmp_path / "run")
    result = run_script("main_TOD.py", "--config", "digits", "--epochs", "2", "--cycles", "1", "--trials", "1",
                        "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "--epochs 2: MILESTONES [16] -> [2]" in result.stdout
    saved = json.load(open(os.path.join(out, "config.json")))
    assert saved["settings"]["MILESTONES"] == [2] and saved["scaled"]["MILESTONES"]["from"] == [16]
    assert saved["script"] == "main_TOD.py" and "CYCLES" in saved["resumable"]


# ----------------------------------------------------------------------------- IMAGE_SIZE

@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """folder:PATH with 3 classes of 40x30 RGB images (train 12, test 4 each)."""
    root = tmp_path_factory.mktemp("images")
    for part, n in (("train", 12), ("test", 4)):
        for c in ("a", "b", "c"):
            write_images(root / part / c, n, (40, 30), seed=ord(c))
    return f"folder:{root}"


@pytest.mark.slow
@pytest.mark.parametrize("script,argv", [
    ("main_TOD", ["--config", "digits", "--set", "START=6", "--set", "ADDENDUM=3", "--set", "SUBSET=9",
                  "--set", "BATCH=4", "--set", "WIDTH=4"]),
    ("main_LL4AL", ["--config", "digits", "--set", "START=6", "--set", "ADDENDUM=3", "--set", "SUBSET=9",
                    "--set", "BATCH=4", "--set", "WIDTH=4"]),
    ("main_al", ["--protocol", "deepal", "--model", "ResNet18", "--strategy", "EntropySampling", "--nStart", "20",
                 "--nQuery", "10", "--nEnd", "40", "--n_epoch", "1"]),
    ("main_al", ["--arch", "resnet18", "--al-method", "uncertainty_entropy", "--al-budget", "6", "--epochs", "1"]),
])
def test_image_size_sets_the_decoded_size_of_image_files(script, argv, image_folder, tmp_path):
    module = importlib.import_module(script)
    out = tmp_path / "run"
    module.main([*argv, "--dataset", image_folder, "--set", "IMAGE_SIZE=16", "--cycles", "1", "--trials", "1",
                 "--quiet", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    saved = json.load(open(out / "config.json"))
    assert saved["run"]["image_shape"] == [3, 16, 16] and saved["settings"]["IMAGE_SIZE"] == 16


def test_image_size_is_refused_for_datasets_stored_at_their_own_size(tmp_path, capsys):
    code, _, err = run_main("main_TOD.py", ["--config", "digits", "--set", "IMAGE_SIZE=16", "--out",
                                            str(tmp_path / "run")], capsys)
    assert code == 2 and "IMAGE_SIZE applies to image files" in err and not os.path.exists(tmp_path / "run")


def _parser_of(script, monkeypatch, capsys):
    """The argparse parser ``script`` builds (caught at its parse_args on --help)."""
    import argparse

    module, argv, _ = ENTRY[script]
    caught = []
    real = argparse.ArgumentParser.parse_args

    def catch(self, args=None, namespace=None):
        if args and "--help" in args:
            caught.append(self)
            raise SystemExit(0)
        return real(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        importlib.import_module(module).main([*argv[:2], "--help"] if module == "main_al" else ["--help"])
    capsys.readouterr()
    return caught[0]


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_help_gives_every_flag_a_text_with_its_default(script, monkeypatch, capsys):
    import argparse

    parser = _parser_of(script, monkeypatch, capsys)
    silent = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        switch = isinstance(action, (argparse._StoreTrueAction, argparse._StoreConstAction))
        if not action.help or not (switch or "default" in action.help.lower()):
            silent.append(action.option_strings[0])
    assert silent == [], f"{script}: flags without help or default: {silent}"
    if script.startswith("main_al.py"):
        assert "RandomSampling" in parser.epilog and "KCenterGreedy" in parser.epilog
