"""Every bad input is one clear line (exit code 2, no traceback) and leaves nothing behind: a table
of values outside the range of every numeric setting of every script, of the run-control flags,
of output folders, of hostile weight files and of damaged results folders."""

import os

import numpy as np
import pytest
import torch
from conftest import ENTRY, run_main

import config
from utils.core.data import make_loader
from utils.core.errors import UserError
from utils.core.loop import Run
from utils.core.results import load_tensors

# numeric keys without a range of their own, and why
UNBOUNDED = {
    "K": "the steepness of CCAL's squashing: any finite number",
    "T": "the threshold of CCAL's squashing: any finite number",
    "MEAN": "a normalisation mean: any finite number per channel",
    "N_QUERY": "-1 or a percent: checked with N_END by the deepal tree",
    "N_END": "-1 or a percent: checked with N_START by the deepal tree",
    "QUERY_ROTATIONS": "one of 1..4 (choices)",
}


def numeric_keys(script):
    return {name: key for name, key in config.tree(script).keys.items()
            if key.type in ("int", "float", "list[int]", "list[float]")}


def outside(key) -> list[str]:
    """Values just outside ``key``'s range (nan and inf: test_floats_must_be_finite)."""
    step = 1 if key.type.endswith("int") or key.type.endswith("int]") else 0.5
    values = []
    if key.minimum is not None:
        values.append(key.minimum - step)
    if key.above is not None:
        values.append(key.above)
    if key.maximum is not None:
        values.append(key.maximum + step)
    if key.below is not None:
        values.append(key.below)
    return [str(int(v)) if step == 1 else f"{v:g}" for v in values]


@pytest.mark.parametrize("script", sorted(ENTRY))
def test_every_numeric_setting_has_a_range(script):
    unranged = [name for name, key in numeric_keys(script).items()
                if name not in UNBOUNDED and not key.choices and
                all(bound is None for bound in (key.minimum, key.maximum, key.above, key.below))]
    assert unranged == [], f"{script}: give these keys a range (minimum/maximum/above/below): {unranged}"


SETTING_CASES = [(script, name, text) for script in sorted(ENTRY) for name, key in numeric_keys(script).items()
                 for text in outside(key)]


@pytest.mark.parametrize("script,name,text", SETTING_CASES, ids=[f"{s}-{n}={t}" for s, n, t in SETTING_CASES])
def test_a_setting_outside_its_range_is_one_line_before_anything_is_written(script, name, text, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders would appear here
    _, argv, folder_flag = ENTRY[script]
    key = config.tree(script).keys[name]
    given = [key.flags[0].split("|")[0], text] if key.flags and not key.switch else ["--set", f"{name}={text}"]
    code, _, err = run_main(script, [*argv, *given, folder_flag, str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and f"{name} expects" in err, (given, err)
    assert "Traceback" not in err and os.listdir(tmp_path) == []


FINITE_CASES = [(script, next(n for n, k in numeric_keys(script).items() if k.type == "float"), text)
                for script in sorted(ENTRY) for text in ("nan", "inf", "-inf")]


@pytest.mark.parametrize("script,name,text", FINITE_CASES, ids=[f"{s}-{n}={t}" for s, n, t in FINITE_CASES])
def test_floats_must_be_finite(script, name, text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, argv, folder_flag = ENTRY[script]
    code, _, err = run_main(script, [*argv, "--set", f"{name}={text}", folder_flag, str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and f"{name} expects" in err, err
    assert os.listdir(tmp_path) == []


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return str(path)


def evil_weights(path):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {path}.ran",)

    torch.save({"conv1.weight": Payload()}, path)
    return str(path)


# what makes ENTRY's smallest command line a valid run, quickly
VALID = {"contrast_main.py": ["--warmup", "0"], "AL_center.py": ["--query-batch", "10", "--max-query", "1"],
         "AL_center_temperature.py": ["--query-batch", "10", "--max-query", "1"]}

# (script, extra argv with {file} / {tmp} placeholders, what the one line says)
FLAG_CASES = [
    ("main_TOD.py", ["--workers", "-1"], "--workers: expected 0 or more"),
    ("main_al.py --protocol rethinking", ["--make-splits", "--nr-splits", "0"], "--nr-splits: expected 1 or more"),
    ("main_al.py --protocol rethinking", ["--make-splits", "--nr-splits", "-1"], "--nr-splits: expected 1 or more"),
    ("main_al.py --protocol rethinking", ["--make-splits", "--split-size", "0"], "--split-size: expected 1 or more"),
    ("main_al.py --protocol deepal", ["--jobs", "0"], "--jobs: expected 1 or more"),
    ("main_al.py --protocol deepal", ["--optimizer", "YF"], "use --optimizer SGD"),
    ("main_al.py --protocol rethinking", ["--arch", "resnet18", "--isL2", "True"], "--isL2 applies to --arch"),
    ("main_al.py --protocol deepal", ["--load_ckpt"], "--load_ckpt: not supported: to continue a run, give its --out "
                                                      "and --resume"),
    ("main_al.py --protocol deepal", ["--add_imagenet"], "--add_imagenet: not supported"),
    ("main_al.py --protocol rethinking", ["--ssl", "fixmatch"], "--ssl is a choice of --protocol deepal"),
    ("main_al.py --protocol deepal", ["--strategy", "RandomSampling,EntropySampling", "--shard", "3/2"],
     "--shard 3/2"),
    ("AL_center.py", ["--gpu", "first"], "--gpu: expected a device index"),
    ("active_main.py", ["--known-classes", "0"], "--known-classes needs at least two classes"),
    ("contrast_main.py", ["--known-classes", "3"], "--known-classes needs at least two classes"),
    ("AL_center_temperature.py", ["--gpu", "-1"], "--gpu: expected a device index"),
    ("main_TOD.py", ["--data-root", ""], "--data-root: expected a path"),
    ("main_TOD.py", ["--out", ""], "--out: expected a path"),
    ("main_LL4AL.py", ["--out", ""], "--out: expected a path"),
    ("main_al.py --protocol deepal", ["--out", ""], "--out: expected a path"),
    ("main_al.py --protocol rethinking", ["--out", ""], "--out: expected a path"),
    ("contrast_main.py", ["--logdir", ""], "--logdir: expected a path"),
    ("active_main.py", ["--out", ""], "--out: expected a path"),
    ("active_main.py", ["--load_feature_path", ""], "--load_feature_path: expected a path"),
    ("AL_center.py", ["--save-dir", ""], "--save-dir: expected a path"),
    ("main_TOD.py", ["--out", "{file}"], "is a file, not a folder"),
    ("main_TOD.py", ["--out", "/dev/null"], "is a file, not a folder"),
    ("main_TOD.py", ["--out", "{file}/run"], "lies under the file"),
    ("main_TOD.py", ["--out", "{file}/line\nbreak"], "lies under the file"),
    ("main_TOD.py", ["--device", "cpu\ngpu"], "invalid choice"),
    ("main_al.py --protocol deepal", ["--strategy", ","], "names no strategy"),
    ("main_al.py --protocol rethinking", ["--al-method", " , "], "names no strategy"),
    ("main_al.py --protocol deepal", ["--out", "{file}/run"], "lies under the file"),
    ("main_al.py --protocol rethinking", ["--out", "{file}/run"], "lies under the file"),
    ("contrast_main.py", ["--logdir", "{file}/run"], "lies under the file"),
    ("contrast_main.py", ["--logdir", "/dev/null"], "is a file, not a folder"),
    ("AL_center.py", ["--save-dir", "{file}/runs"], "--save-dir {file}/runs/"),
    ("AL_center_temperature.py", ["--out", "{file}"], "is a file, not a folder"),
    ("main_TOD.py", ["--set", "MODEL=imagenet_resnet18", "--set", "PRETRAINED={tmp}/evil.pth"],
     "holds Python objects other than tensors"),
    ("main_TOD.py", ["--set", "MODEL=imagenet_resnet18", "--set", "PRETRAINED={file}"], "not a PyTorch file"),
]


@pytest.mark.parametrize("script,extra,message", FLAG_CASES, ids=[f"{s}-{' '.join(e)}" for s, e, _ in FLAG_CASES])
def test_bad_flags_and_output_folders_are_one_line(script, extra, message, tmp_path, a_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil_weights(tmp_path / "evil.pth")
    before = sorted(os.listdir(tmp_path))
    _, argv, folder_flag = ENTRY[script]
    extra = [e.format(file=a_file, tmp=tmp_path) for e in extra]
    out = [] if any(flag in extra for flag in (folder_flag, "--out")) else [folder_flag, str(tmp_path / "out")]
    code, _, err = run_main(script, [*argv, *VALID.get(script, []), "--epochs", "1", *extra, *out], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message.format(file=a_file) in err, (extra, err)
    assert "Traceback" not in err and sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    code, _, err = run_main("main_TOD.py", ["--config", "digits", "--out", str(locked / "run")], capsys)
    assert code == 2 and "is not writable" in err and len(err.splitlines()) == 1
    assert os.listdir(locked) == []


def test_hostile_weight_files_are_refused_without_running_them(tmp_path):
    path = evil_weights(tmp_path / "evil.pt")
    with pytest.raises(UserError, match="holds Python objects other than tensors") as err:
        load_tensors(path, "weights", "fix it")
    assert not os.path.exists(f"{path}.ran") and "\n" not in str(err.value)
    (tmp_path / "page.pt").write_text("<html>404</html>")
    torch.save({"w": torch.ones(3)}, tmp_path / "good.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:40])
    for name, reason in (("page.pt", "not a PyTorch file"), ("cut.pt", "zip archive"), ("none.pt", "No such file")):
        with pytest.raises(UserError, match=reason) as err:
            load_tensors(str(tmp_path / name), "weights", "fix it")
        assert "\n" not in str(err.value)


def test_gpu_must_name_a_device_of_the_machine(monkeypatch):
    from types import SimpleNamespace

    from utils.protocols.lfosa import device_and_rank

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = SimpleNamespace(use_cpu=False, device="auto", gpu="99", local_rank=None)
    with pytest.raises(UserError, match="--gpu 99: this machine has 1 CUDA device"):
        device_and_rank(args)
    assert device_and_rank(SimpleNamespace(**{**vars(args), "gpu": "0"}))[1] == 0


@pytest.mark.parametrize("n,batch,sizes", [(129, 64, [64, 64]), (130, 64, [64, 64, 2]), (1, 64, []),
                                           (65, 64, [64]), (128, 64, [64, 64])])
def test_training_batches_never_end_with_a_single_image(n, batch, sizes):
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(torch.zeros(n))
    loader = make_loader(dataset, np.arange(n), batch, shuffle=True)
    assert [len(b) for b in loader] == sizes and len(loader) == len(sizes)
    scoring = make_loader(dataset, np.arange(n), batch)  # scoring keeps every image
    assert sum(len(b) for b in scoring) == n


IDENTITY = {"SEED": 0}


def finished_run(out):
    run = Run(str(out), {"settings": IDENTITY}, IDENTITY)
    run.commit(0, 0, np.array([1, 2]), np.array([2]), 50.0, {"train_seconds": 1.0}, {"weights": torch.ones(2)})
    run.close()


@pytest.mark.parametrize("damage,message", [
    (lambda out: (out / "cycles.csv").write_bytes(b"\xff\xfe\x00\x81garbage"), "is not a results table"),
    (lambda out: (out / "cycles.csv").write_text("name,age\nbob,3\n"), "no trial, cycle, n_labeled column"),
    (lambda out: (out / "cycles.csv").write_text("trial,cycle,n_labeled\n0,zero,2\n"), "is not a whole number"),
    (lambda out: (out / "cycles.csv").write_text("trial,cycle,n_labeled\n0,0\n"), "3 columns expected"),
    (lambda out: (out / "cycles.csv").write_text("trial,cycle,n_labeled\n"), "lacks the row of finished trial 0"),
    (lambda out: (out / "state.json").write_text("[1, 2]"), "corrupt"),
    (lambda out: (out / "state.json").write_text('{"identity": "SEED", "finished": {}}'), "corrupt"),
    (lambda out: (out / "state.json").write_text('{"identity": {}, "finished": {"zero": 0}}'), "corrupt"),
    (lambda out: (out / "state.json").write_bytes(b"\xff\xfe{"), "corrupt"),
    (lambda out: (out / "config.json").unlink() or (out / "state.json").write_text("{"), "corrupt"),
])
def test_damaged_results_files_are_refused_on_resume_with_one_line(tmp_path, damage, message):
    out = tmp_path / "run"
    finished_run(out)
    damage(out)
    with pytest.raises(UserError, match=message) as err:
        Run(str(out), {"settings": IDENTITY}, IDENTITY, resume=True)
    assert "\n" not in str(err.value)


def test_a_folder_the_user_cannot_write_to_is_named(tmp_path, monkeypatch):
    from utils.core.results import check_folder

    monkeypatch.setattr(os, "access", lambda path, mode: os.path.realpath(path) != str(tmp_path))
    with pytest.raises(UserError, match=f"--save-dir {tmp_path}/a/b: {tmp_path} is not writable"):
        check_folder(str(tmp_path / "a" / "b"), "--save-dir")
    monkeypatch.undo()
    check_folder(str(tmp_path / "a" / "b"), "--save-dir")  # writable: no error, nothing made
    assert os.listdir(tmp_path) == []


def test_the_toolkits_flags_that_change_nothing_say_so(capsys):
    import main_al

    main_al.parse_args(["--protocol", "deepal", "--strategy", "RandomSampling", "--save_file", "r.csv",
                        "--proxy_model", "ResNet18", "--nEmb", "256"])
    out = capsys.readouterr().out
    for flag in ("--save_file", "--proxy_model", "--nEmb"):
        assert f"notice: {flag} is accepted and changes nothing" in out


def test_an_error_message_with_line_breaks_is_printed_on_one_line(capsys):
    from utils.core.cli import run_cli

    def main():
        raise UserError("cannot read image a\nb.png: broken\r\nfile")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == "error: cannot read image a\\nb.png: broken\\r\\nfile\n"


# ----------------------------------------------------------------------------- own images: links


def own_images_folder(root):
    from own_images import make_own_images

    return sorted(make_own_images(str(root), labeled_per_class=1, n_unlabeled=6, n_test=0, classes=3))


def scan_in_time(root, seconds=30):
    """annotation.scan(root) in a thread that must finish within ``seconds`` (a walk that follows
    symlink loops does not); returns its result or raises its error."""
    import threading

    from utils.core.data.own_images import scan

    outcome = {}

    def target():
        try:
            outcome["images"] = scan(str(root))
        except UserError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "listing the pool did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["images"]


def test_symlink_loops_in_the_pool_are_walked_once(tmp_path):
    pool = own_images_folder(tmp_path)
    (tmp_path / "unlabeled" / "deep").mkdir()
    os.symlink("..", tmp_path / "unlabeled" / "deep" / "up")  # unlabeled/deep/up -> unlabeled/
    os.symlink(".", tmp_path / "unlabeled" / "here")  # unlabeled/here -> itself
    images = scan_in_time(tmp_path)
    assert [p for p in images.paths if p.startswith("unlabeled")] == pool


def test_one_image_file_under_two_paths_is_refused_naming_both(tmp_path):
    pool = own_images_folder(tmp_path)
    os.symlink(os.path.abspath(tmp_path / pool[0]), tmp_path / "unlabeled" / "again.png")
    with pytest.raises(UserError, match="are the same image file") as err:
        scan_in_time(tmp_path)
    assert str(tmp_path / pool[0]) in str(err.value) and str(tmp_path / "unlabeled" / "again.png") in str(err.value)


def test_symlinked_image_files_and_folders_stay_in_the_pool(tmp_path):
    pool = own_images_folder(tmp_path)
    (tmp_path / "elsewhere" / "folder").mkdir(parents=True)
    os.rename(tmp_path / pool[0], tmp_path / "elsewhere" / "file.png")
    os.symlink(tmp_path / "elsewhere" / "file.png", tmp_path / pool[0])
    os.rename(tmp_path / pool[1], tmp_path / "elsewhere" / "folder" / "img.png")
    os.symlink(tmp_path / "elsewhere" / "folder", tmp_path / "unlabeled" / "linked")
    images = scan_in_time(tmp_path)
    assert [p for p in images.paths if p.startswith("unlabeled")] == \
        sorted([pool[0], *pool[2:], os.path.join("unlabeled", "linked", "img.png")])


# ----------------------------------------------------------------------------- own images: spreadsheet cells

FORMULAS = {"c0": "=1+1", "c1": "@SUM(1,1)", "c2": "-2+3"}  # class folders a spreadsheet would run


def test_cells_that_begin_like_a_formula_are_escaped_and_read_back():
    import io

    from utils.core.cells import csv_text, read_rows

    values = ["=1+1", "@SUM(1,1)", "+cmd", "-2+3", "\tx", "\rx", "'=x", "''@y", "'plain", "plain", "a=b", ""]
    text = csv_text(["value"], [[v] for v in values])
    cells = [line for line in text.split("\r\n")[1:] if line]
    assert all(not cell.lstrip('"').startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells), cells
    assert read_rows(io.StringIO(text, newline=""))[1] == [{"value": v} for v in values]


@pytest.mark.slow
def test_class_names_like_formulas_are_escaped_in_every_csv_and_the_answers_round_trip(tmp_path, capsys):
    import csv

    from conftest import fill_labels
    from own_images import make_own_images

    import main_al

    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_test=30, classes=3)
    for old, new in FORMULAS.items():
        for part in ("labeled", "test"):
            os.rename(root / part / old, root / part / new)
    argv = ["--protocol", "deepal", "--dataset", f"folder:{root}", "--oracle", "human", "--strategy", "RandomSampling",
            "--model", "LeNet", "--n_epoch", "1", "--query-size", "5", "--out", str(out), "--quiet"]
    main_al.main(argv)

    def cells(name):
        with open(out / name, newline="") as fh:
            return [cell for row in csv.reader(fh) for cell in row]

    for name in ("to_label/cycle0.csv", "predictions.csv", "images.csv"):
        assert not [c for c in cells(name) if c.startswith(("=", "+", "-", "@", "\t", "\r"))], name
    assert "'=1+1" in cells("images.csv")
    with open(out / "to_label" / "cycle0.csv", newline="") as fh:
        first = next(csv.DictReader(fh))["path"]
    answers = {path: "'" + FORMULAS[name] for path, name in truth.items()}  # as a spreadsheet writes them back
    rows = fill_labels(out / "to_label" / "cycle0.csv", answers, override={1: FORMULAS[truth[first]]})  # typed
    main_al.main([*argv, "--resume"])
    from utils.core.cells import read_rows

    with open(out / "images.csv", newline="") as fh:
        given = {r["path"]: r["label"] for r in read_rows(fh)[1] if r["labeled_in"] == "0"}
    assert given == {r["path"]: FORMULAS[truth[r["path"]]] for r in rows} and len(given) == 5


# ----------------------------------------------------------------------------- own images: --oracle folder


@pytest.mark.slow
def test_a_queried_image_that_is_gone_stops_the_folder_oracle_and_resume_continues_once_it_is_back(tmp_path):
    import csv
    import shutil
    import threading

    from own_images import make_own_images

    import main_al
    from utils.core.results import read_cycles

    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=40, n_test=0, classes=3)
    argv = ["--protocol", "deepal", "--dataset", f"folder:{root}", "--oracle", "folder", "--strategy", "RandomSampling",
            "--model", "LeNet", "--n_epoch", "1", "--query-size", "4", "--cycles", "2", "--set", "POLL_SECONDS=0.05",
            "--out", str(out), "--quiet"]
    outcome = []

    def run():
        try:
            main_al.main(argv)
        except UserError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    query = out / "to_label" / "cycle0.csv"
    assert _wait(lambda: query.exists() and read_cycles(str(out)), 120)
    with open(query, newline="") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    for rel in paths[1:]:
        shutil.move(root / rel, root / "labeled" / truth[rel] / os.path.basename(rel))
    (tmp_path / "aside").mkdir()
    shutil.move(root / paths[0], tmp_path / "aside" / "moved.png")  # moved elsewhere (or deleted)
    worker.join(60)
    assert not worker.is_alive(), "the folder oracle waits for an image that is gone"
    message = str(outcome[0])
    assert f"image {paths[0]} of this run is gone" in message and str(root / paths[0]) in message
    assert f"{root / 'labeled'}/<class>/" in message and "--resume" in message and "\n" not in message
    shutil.move(tmp_path / "aside" / "moved.png", root / "labeled" / truth[paths[0]] / os.path.basename(paths[0]))
    main_al.main([*argv, "--resume"])
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [6, 10]


def _wait(condition, seconds):
    import time

    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


# ----------------------------------------------------------------------------- SVHN and MNIST files


def svhn_file(root, **arrays):
    from conftest import make_svhn
    from scipy.io import savemat

    make_svhn(str(root), 20, 10)
    path = root / "svhn" / "train_32x32.mat"
    if arrays:
        savemat(path, arrays, do_compression=True)
    return path


@pytest.mark.parametrize("damage,message", [
    (lambda path: path.write_bytes(b"<html>not found</html>"), "cannot read {path} ("),
    (lambda path: path.write_bytes(path.read_bytes()[:300]), "{path}"),  # truncated
    (lambda path: svhn_file(path.parent.parent, images=np.zeros((2, 2), np.uint8)), "it holds images, not X and y"),
    (lambda path: svhn_file(path.parent.parent, X=np.zeros((28, 28, 3, 4), np.uint8), y=np.ones((4, 1))),
     "X is 28x28x3x4, not 32x32x3xN"),
    (lambda path: svhn_file(path.parent.parent, X=np.zeros((32, 32, 3, 4), np.uint8), y=np.ones((3, 1))),
     "not one label per image of X (4)"),
    (lambda path: svhn_file(path.parent.parent, X=np.zeros((32, 32, 3, 4), np.float64), y=np.ones((4, 1))),
     "X is float64 (expected uint8)"),
    (lambda path: svhn_file(path.parent.parent, X=np.zeros((32, 32, 3, 4), np.uint8), y=np.full((4, 1), 11)),
     "outside 0..10"),
])
def test_a_malformed_svhn_file_is_one_line_naming_it(tmp_path, damage, message):
    from utils.core.data import build_data

    path = svhn_file(tmp_path)
    damage(path)
    with pytest.raises(UserError) as err:
        build_data("svhn", root=str(tmp_path))
    assert message.format(path=path) in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_an_svhn_file_declaring_more_images_than_the_budget_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    import scipy.io

    from utils.core import data as data_module
    from utils.core.data import arrays

    path = svhn_file(tmp_path, X=np.zeros((32, 32, 3, 2000), np.uint8), y=np.ones((2000, 1)))
    assert path.stat().st_size < 20_000  # 6 MB of images, compressed
    monkeypatch.setattr(arrays, "CACHE_BYTES", 1000 * 3072)  # the budget the SVHN reader checks
    monkeypatch.setattr(scipy.io, "loadmat", lambda *_a, **_k: pytest.fail("the file was inflated"))
    with pytest.raises(UserError, match=r"X declares 2,000 images \(0.0 GB\), over the 0 GB in-memory budget"):
        data_module.build_data("svhn", root=str(tmp_path))


@pytest.mark.parametrize("damage,culprit,message", [
    (lambda raw, _: (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00"),
     "raw/train-images-idx3-ubyte", "cannot read"),
    (lambda raw, _: (raw / "t10k-labels-idx1-ubyte").write_bytes(b"garbage"), "raw/t10k-labels-idx1-ubyte",
     "cannot read"),
    (lambda raw, _: (raw / "train-labels-idx1-ubyte").write_bytes(
        np.array([2049, 30], dtype=">i4").tobytes() + bytes([12] * 30)), "raw/train-labels-idx1-ubyte",
     "is not MNIST data"),
    (lambda raw, processed: [evil_weights(processed / name) for name in ("training.pt", "test.pt")],
     "processed/training.pt", "cannot read"),
    (lambda raw, processed: [torch.save((torch.zeros(3, 5, dtype=torch.uint8), torch.zeros(3)), processed / name)
                             for name in ("training.pt", "test.pt")], "processed/training.pt", "is not MNIST data"),
])
def test_a_malformed_or_hostile_mnist_file_is_one_line_naming_it(tmp_path, damage, culprit, message):
    from conftest import make_mnist

    from utils.core.data import build_data

    make_mnist(str(tmp_path))
    raw, processed = tmp_path / "MNIST" / "raw", tmp_path / "MNIST" / "processed"
    processed.mkdir()
    damage(raw, processed)
    with pytest.raises(UserError) as err:
        build_data("mnist", root=str(tmp_path))
    text = str(err.value)
    assert str(tmp_path / "MNIST" / culprit) in text and message in text and "--download" in text, text
    assert "\n" not in text
    assert "weights_only" not in text and not list(processed.glob("*.ran"))
