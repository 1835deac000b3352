"""Active learning on own images with a person answering (utils/core/data/own_images.py,
utils/core/oracles.py, main_al.py --oracle human|folder): the whole loop, the answers' checks, the folder
watcher, bad layouts."""

import csv
import hashlib
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from conftest import fill_labels, label_studio_export
from own_images import make_own_images
from PIL import Image

import main_al
from utils.core.cli import run_cli
from utils.core.errors import UserError
from utils.core.labelstudio import tasks
from utils.core.oracles import contact_sheet, read_answers
from utils.core.results import read_config, read_cycles
from utils.protocols.deepal import DeepAL
from utils.samplers import get_strategy, list_strategies


def command(root, out, *extra, strategy="BadgeSampling", protocol="deepal", oracle="human"):
    """main_al.py's command line for own images in ``root``, results in ``out``."""
    model = ["--model", "LeNet"] if protocol == "deepal" else ["--arch", "lenet"]
    strategy_flag = "--strategy" if protocol == "deepal" else "--al-method"
    return ["--protocol", protocol, "--dataset", f"folder:{root}", "--oracle", oracle, strategy_flag, strategy, *model,
            "--query-size", "50", "--out", str(out), "--quiet", *extra]


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def snapshot(folder):
    """{relative path: md5} of every file under ``folder``."""
    files = {}
    for current, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(current, name)
            with open(path, "rb") as fh:
                files[os.path.relpath(path, folder)] = hashlib.md5(fh.read()).hexdigest()
    return files


def fails(argv, capsys):
    """Run main_al.py; return the one-line error (exit code 2)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main_al.main(argv))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------- the whole loop

@pytest.mark.slow
def test_label_the_query_resume_and_the_labeled_set_grows_and_accuracy_rises(tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root))
    argv = command(root, out, "--n_epoch", "50", "--lr", "0.01")
    main_al.main(argv)
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert said.startswith("label the 50 images of") and "--resume" in said and "unknown" in said
    rows = read_rows(out / "to_label" / "cycle0.csv")
    assert list(rows[0]) == ["path", "label", "predicted", "score"] and len(rows) == 50
    assert all(r["label"] == "" and r["path"] in truth for r in rows) and len({r["path"] for r in rows}) == 50
    sheet = Image.open(out / "to_label" / "cycle0.png")
    assert sheet.size == (10 * 100 + 4, 5 * 100 + 4)  # 50 tiles of 96 px, 10 per row, 4 px apart
    predictions = read_rows(out / "predictions.csv")
    assert len(predictions) == len(truth) and list(predictions[0]) == ["path", "predicted", "confidence"]

    for cycle in (0, 1):
        fill_labels(out / "to_label" / f"cycle{cycle}.csv", truth)
        main_al.main([*argv, "--resume"])
    cycles = read_cycles(str(out))
    assert [r["n_labeled"] for r in cycles] == [20, 70, 120] and [r["n_queried"] for r in cycles] == [50] * 3
    assert cycles[2]["test_acc"] > cycles[0]["test_acc"] + 10, cycles
    images = read_rows(out / "images.csv")
    given = {r["path"]: r["label"] for r in images if r["labeled_in"] in ("0", "1")}
    assert len(given) == 100 and all(truth[p] == label for p, label in given.items())
    labeled = np.load(out / "labeled" / "trial0_cycle2.npy")
    assert len(labeled) == 120 and {images[i]["label"] for i in labeled} == {f"c{k}" for k in range(10)}
    queried = [r["path"] for r in read_rows(out / "to_label" / "cycle2.csv")]
    assert not set(queried) & set(given)  # answered images are never queried again


def test_unknown_answers_are_set_aside_and_never_queried_again(tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=120, n_test=0)
    argv = command(root, out, "--n_epoch", "1", "--query-size", "30", strategy="RandomSampling")
    main_al.main(argv)
    rows = fill_labels(out / "to_label" / "cycle0.csv", truth, override={1: "unknown", 2: "Unknown"})
    main_al.main([*argv, "--resume"])
    cycles = read_cycles(str(out))
    assert [r["n_labeled"] for r in cycles] == [20, 48] and cycles[0]["test_acc"] == ""  # no test/: left empty
    next_query = {r["path"] for r in read_rows(out / "to_label" / "cycle1.csv")}
    assert rows[0]["path"] not in next_query and rows[1]["path"] not in next_query
    images = {r["path"]: r for r in read_rows(out / "images.csv")}
    assert images[rows[0]["path"]]["label"] == "unknown" and images[rows[0]["path"]]["labeled_in"] == "0"
    pool = {r["path"] for r in read_rows(out / "predictions.csv")}
    assert len(pool) == 120 - 30 and rows[0]["path"] not in pool


def test_images_added_later_keep_the_run_indices(tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=80, n_test=0)
    argv = command(root, out, "--n_epoch", "1", "--query-size", "10", strategy="RandomSampling")
    main_al.main(argv)
    before = read_rows(out / "images.csv")
    shutil.copy(root / next(iter(truth)), root / "unlabeled" / "aaa_first.png")  # sorts first
    fill_labels(out / "to_label" / "cycle0.csv", truth)
    main_al.main([*argv, "--resume"])
    assert "1 image(s) under" in capsys.readouterr().out
    after = read_rows(out / "images.csv")
    assert [r["path"] for r in after] == [r["path"] for r in before]


@pytest.mark.parametrize("edit,message", [
    (lambda rows: [{**r, "label": ""} if i == 2 else r for i, r in enumerate(rows)], "row 3 (unlabeled/"),
    (lambda rows: [{**r, "label": "c11"} if i == 0 else r for i, r in enumerate(rows)], "row 1 (unlabeled/"),
    (lambda rows: [{**r, "path": "unlabeled/elsewhere.png"} if i == 4 else r for i, r in enumerate(rows)],
     "row 5: 'unlabeled/elsewhere.png' is not one of the queried images"),
    (lambda rows: rows[:-1], "has no row for"),
    (lambda rows: rows + rows[:1], "appears twice"),
    (lambda rows: [{"file": r["path"], "label": r["label"]} for r in rows], "expected path, label, predicted, score"),
])
def test_a_bad_answer_names_the_row_and_changes_nothing(tmp_path, capsys, edit, message):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=60, n_test=0)
    argv = command(root, out, "--n_epoch", "1", "--query-size", "8", strategy="RandomSampling")
    main_al.main(argv)
    rows = fill_labels(out / "to_label" / "cycle0.csv", truth)
    rows = edit(rows)
    with open(out / "to_label" / "cycle0.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    before = snapshot(out)
    assert message in fails([*argv, "--resume"], capsys)
    assert snapshot(out) == before


def test_answers_may_come_back_sorted_and_must_name_a_class():
    expected = ["unlabeled/b.png", "unlabeled/a.png"]
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"answers-{os.getpid()}.csv")
    with open(path, "w") as fh:
        fh.write("path,label,predicted,score\nunlabeled/a.png, cat ,dog,0.5\nunlabeled/b.png,UNKNOWN,cat,0.4\n")
    try:
        assert read_answers(path, expected, ["cat", "dog"]) == {"unlabeled/a.png": 0, "unlabeled/b.png": -2}
        with pytest.raises(UserError, match="'Cat' is not a class"):
            with open(path, "w") as fh:
                fh.write("path,label,predicted,score\nunlabeled/a.png,Cat,,\nunlabeled/b.png,dog,,\n")
            read_answers(path, expected, ["cat", "dog"])
    finally:
        os.remove(path)


def test_the_contact_sheet_numbers_every_tile():
    images = torch.zeros(12, 1, 8, 8, dtype=torch.uint8)
    sheet = np.asarray(contact_sheet(images, tile=32, columns=5))
    assert sheet.shape == (3 * 36 + 4, 5 * 36 + 4, 3)
    assert (sheet[4:18, 4:20, 0] > 0).any() and (sheet[4 + 2 * 36:18 + 2 * 36, 4:20, 0] > 0).any()  # labels 1, 11


# ------------------------------------------------------------------------------- --oracle folder

def test_the_folder_oracle_waits_until_the_images_are_moved(tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=60, n_test=40)
    argv = command(root, out, "--n_epoch", "1", "--query-size", "6", "--cycles", "2", "--set", "POLL_SECONDS=0.05",
                   strategy="EntropySampling", oracle="folder")
    errors = []
    worker = threading.Thread(target=lambda: errors.append(main_al.main(argv)))
    worker.start()
    query = out / "to_label" / "cycle0.csv"
    for _ in range(600):
        if query.exists() and (out / "state.json").exists() and read_cycles(str(out)):
            break
        time.sleep(0.05)
    rows = read_rows(query)
    for k, row in enumerate(rows):
        target = root / "unknown" if k == 0 else root / "labeled" / truth[row["path"]]
        os.makedirs(target, exist_ok=True)
        shutil.move(root / row["path"], target / os.path.basename(row["path"]))
    worker.join(timeout=120)
    assert not worker.is_alive() and errors == [None]
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [20, 25]
    images = {os.path.basename(r["path"]): r for r in read_rows(out / "images.csv")}
    first = images[os.path.basename(rows[0]["path"])]
    assert first["label"] == "unknown" and first["path"].startswith("unknown")
    second = images[os.path.basename(rows[1]["path"])]
    assert second["path"] == f"labeled/{truth[rows[1]['path']]}/{os.path.basename(rows[1]['path'])}"


def test_a_folder_run_resumes_after_the_images_were_moved(tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=60, n_test=0)
    argv = command(root, out, "--n_epoch", "1", "--query-size", "6", "--cycles", "3", strategy="RandomSampling")
    main_al.main(argv)  # --oracle human stops after the query; the person then moves the files instead
    for row in read_rows(out / "to_label" / "cycle0.csv"):
        shutil.move(root / row["path"], root / "labeled" / truth[row["path"]] / os.path.basename(row["path"]))
    os.mkdir(root / "labeled" / "c10")
    folder_argv = command(root, out, "--n_epoch", "1", "--query-size", "6", strategy="RandomSampling", oracle="folder")
    with pytest.raises(UserError, match="c10 holds no image"):
        main_al.main([*folder_argv, "--cycles", "3", "--resume"])
    os.rmdir(root / "labeled" / "c10")
    main_al.main([*folder_argv, "--cycles", "2", "--resume"])  # cycle 1 is the last: no query, no wait
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [20, 26]


# ------------------------------------------------------------------------------- bad layouts and settings

@pytest.mark.parametrize("damage,extra,message", [
    (lambda root: shutil.rmtree(root / "unlabeled"), [], "needs"),
    (lambda root: shutil.rmtree(root / "labeled"), [], "needs"),
    (lambda root: os.mkdir(root / "labeled" / "c10"), [], "labeled/c10 holds no image file"),
    (lambda root: (root / "unlabeled" / "part0" / "broken.png").write_bytes(b"no image"), [], "broken.png"),
    (lambda root: os.mkdir(root / "test" / "c99"), [], "test/c99 is not a class"),
    (lambda root: None, ["--trials", "2"], "--trials 1"),
    (lambda root: None, ["--nStart", "5"], "drop N_START"),
    (lambda root: None, ["--known-classes", "3"], "unknown"),
    (lambda root: None, ["--strategy", "RandomSampling,EntropySampling"], "one strategy"),
    (lambda root: None, ["--oracle", "simulated"], "--oracle human (or folder)"),
    (lambda root: None, ["--pretrained", "weights.pth"], "ImageNet ResNet-18 only"),
])
def test_bad_layouts_and_settings_stop_before_anything_is_written(tmp_path, capsys, damage, extra, message):
    root, out = tmp_path / "data", tmp_path / "run"
    make_own_images(str(root), n_unlabeled=30, n_test=20)
    damage(root)
    err = fails([*command(root, out, "--n_epoch", "1", strategy="RandomSampling"), *extra], capsys)
    assert message in err and not out.exists(), err


def test_other_scripts_refuse_the_own_images_layout(tmp_path, capsys):
    root = tmp_path / "data"
    make_own_images(str(root), n_unlabeled=20, n_test=10)
    argv = ["--protocol", "deepal", "--dataset", f"folder:{root}", "--strategy", "RandomSampling", "--quiet",
            "--out", str(tmp_path / "run")]
    assert "--oracle human" in fails(argv, capsys)


# ------------------------------------------------------------------------------- every strategy, both protocols

OWN_STRATEGIES = [s for s in list_strategies() if not get_strategy(s).missing(DeepAL.SERVES)]


@pytest.mark.slow
@pytest.mark.parametrize("name", OWN_STRATEGIES)
def test_every_strategy_queries_own_images(tmp_path, name):
    root, out = tmp_path / "data", tmp_path / "run"
    make_own_images(str(root), n_unlabeled=60, n_test=0)
    small = {"VAE_WIDTH": "8", "ASAL_STEPS": "5", "CORESET_TIME_LIMIT": "5"}  # the strategy's own, made cheap
    own = [f"--set={key}={value}" for key, value in small.items() if key in get_strategy(name).keys()]
    main_al.main([*command(root, out, "--n_epoch", "1", "--query-size", "10", strategy=name), *own,
                  "--n_ensembles", "2"])
    rows = read_rows(out / "to_label" / "cycle0.csv")
    size = 10 if get_strategy(name).fixed_size else len(rows)
    assert len(rows) == size and 0 < size <= 10 and all(r["path"].startswith("unlabeled/") for r in rows)


@pytest.mark.parametrize("strategy", ["uncertainty_entropy", "coreset"])
def test_the_rethinking_protocol_asks_a_person_too(tmp_path, strategy):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=60, n_test=20)
    argv = command(root, out, "--epochs", "1", "--query-size", "7", "--save-models", strategy=strategy,
                   protocol="rethinking")
    main_al.main(argv)
    fill_labels(out / "to_label" / "cycle0.csv", truth)
    main_al.main([*argv, "--resume"])
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [20, 27]
    assert (out / "models" / "trial0_cycle1.pt").exists()
    assert read_config(str(out))["derived"]["classes"] == [f"c{k}" for k in range(10)]


@pytest.mark.parametrize("protocol_flags,sizes", [
    (["--protocol", "deepal", "--strategy", "RandomSampling", "--model", "LeNet", "--n_epoch", "1", "--nStart", "5",
      "--cycles", "3"], [71, 78, 85]),
    (["--al-method", "random", "--arch", "lenet", "--epochs", "1", "--al-budget", "20", "--al-nb-cycles", "3"],
     [20, 27, 34]),
])
def test_query_size_is_a_count_under_both_protocols(tmp_path, protocol_flags, sizes):
    out = tmp_path / "run"
    main_al.main([*protocol_flags, "--dataset", "digits", "--query-size", "7", "--quiet", "--out", str(out),
                  "--data-root", str(tmp_path)])
    assert [r["n_labeled"] for r in read_cycles(str(out))] == sizes


def test_pretrained_weights_fill_the_whole_trunk_of_the_imagenet_resnet(tmp_path):
    from torchvision.models import resnet18

    from models import build_model
    from models.resnet import WHOLE_TRUNK

    torch.manual_seed(0)
    weights = resnet18().state_dict()
    torch.save(weights, tmp_path / "resnet18.pth")
    model = build_model("imagenet_resnet18", 10, consistency_head=False)
    loaded = model.load_imagenet_trunk(str(tmp_path / "resnet18.pth"), WHOLE_TRUNK)
    assert torch.equal(model.layer4[1].conv2.weight, weights["layer4.1.conv2.weight"])
    assert torch.equal(model.stem[0].weight, weights["conv1.weight"])
    assert not any(k.startswith("linear") for k in loaded)
    tod = build_model("imagenet_resnet18", 10)
    tod.load_imagenet_trunk(str(tmp_path / "resnet18.pth"))  # TOD's choice: layer4 stays random
    assert not torch.equal(tod.layer4[1].conv2.weight, weights["layer4.1.conv2.weight"])


@pytest.mark.slow
def test_an_imagenet_resnet_from_weights_runs_on_larger_own_images(tmp_path):
    from torchvision.models import resnet18

    root, out = tmp_path / "data", tmp_path / "run"
    make_own_images(str(root), n_unlabeled=30, n_test=20)
    torch.save(resnet18().state_dict(), tmp_path / "resnet18.pth")
    argv = command(root, out, "--n_epoch", "1", "--query-size", "5", strategy="BALDDropout")
    argv[argv.index("LeNet")] = "ImageNetResNet18"
    main_al.main([*argv, "--pretrained", str(tmp_path / "resnet18.pth"), "--set", "IMAGE_SIZE=64"])
    config = read_config(str(out))
    assert config["run"]["image_shape"] == [3, 64, 64] and config["derived"]["model_name"] == "imagenet_resnet18"
    assert len(read_rows(out / "to_label" / "cycle0.csv")) == 5


def test_ctrl_c_while_waiting_is_one_line_and_exit_130(capsys):
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        run_cli(interrupted)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 130 and len(err.splitlines()) == 1 and "--resume" in err


# ------------------------------------------------------------------------------- hidden entries, hostile images

def test_hidden_entries_are_never_images_nor_classes(tmp_path):
    from utils.core.data import build_data
    from utils.core.data.own_images import scan

    root = tmp_path / "data"
    make_own_images(str(root), labeled_per_class=2, n_unlabeled=20, n_test=20, classes=3)
    before = scan(str(root))
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # macOS metadata, not a PNG
    for relative in ("labeled/c0/._img.png", "unlabeled/part0/._img.png", "unlabeled/.DS_Store", "test/c1/._x.png"):
        (root / relative).write_bytes(apple_double)
    image = next(root.glob("labeled/c0/*.png"))
    for relative in ("labeled/c1/.ipynb_checkpoints/x-checkpoint.png", "labeled/.Trash/x.png",
                     "unlabeled/.thumbnails/t.png", "unlabeled/part1/.cache/deep/t.png", "test/.hidden/x.png",
                     "test/c2/.thumbnails/x.png"):
        os.makedirs((root / relative).parent, exist_ok=True)
        shutil.copy(image, root / relative)
    after = scan(str(root))
    assert after.classes == before.classes == ["c0", "c1", "c2"]
    assert after.paths == before.paths and after.test_paths == before.test_paths
    data = build_data(f"folder:{root}", own_images=True)  # every listed file decodes
    assert data.decoded and len(data.train) == len(before.paths)


@pytest.mark.parametrize("side", [12, 20])  # 144 pixels: PIL warns; 400 (over twice 100): PIL raises
def test_an_image_over_the_decompression_bomb_limit_stops_with_one_line(tmp_path, capsys, monkeypatch, side):
    import warnings

    root, out = tmp_path / "data", tmp_path / "run"
    make_own_images(str(root), n_unlabeled=30, n_test=20)
    Image.new("RGB", (side, side)).save(root / "unlabeled" / "part1" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the digits are 8x8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        err = fails(command(root, out, "--n_epoch", "1", strategy="RandomSampling"), capsys)
    shown = f"{side}x{side}" if side == 12 else side * side  # PIL's error gives the pixel count only
    assert err == (f"error: image {root / 'unlabeled' / 'part1' / 'big.png'} is {shown} pixels, over PIL's "
                   "decompression-bomb limit (100 pixels); shrink it or remove it")
    assert not caught and not out.exists(), [str(w.message) for w in caught]


@pytest.mark.slow
def test_a_run_labeled_through_label_studio_exports(tmp_path, capsys):
    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=120, n_test=0)
    argv = command(root, out, "--n_epoch", "1", "--query-size", "10", strategy="RandomSampling")
    main_al.main(argv)
    to_label = out / "to_label"
    assert (to_label / "labeling_config.xml").is_file()

    def query(cycle):
        with open(to_label / f"cycle{cycle}.tasks.json") as fh:
            loaded = json.load(fh)
        assert [t["data"]["path"] for t in loaded] == [r["path"] for r in read_rows(to_label / f"cycle{cycle}.csv")]
        assert all(os.path.isfile(root / t["data"]["path"]) and t["data"]["run"] == str(out) for t in loaded)
        return loaded, [truth[t["data"]["path"]] for t in loaded]

    # a bad export stops before anything changes: the wrong cycle's file, then a name that is no class
    loaded, answers = query(0)
    other_cycle = tasks([t["data"]["path"] for t in loaded], answers, [1] * 10, 1, str(out))
    label_studio_export(other_cycle, answers, "json", to_label / "cycle0.export.json")
    before = snapshot(out)
    del before["to_label/cycle0.export.json"]
    assert "is an export of cycle 1" in fails([*argv, "--resume"], capsys)
    label_studio_export(loaded, ["cat", *answers[1:]], "json", to_label / "cycle0.export.json")
    assert "'cat' is not a class" in fails([*argv, "--resume"], capsys)
    assert {k: v for k, v in snapshot(out).items() if k != "to_label/cycle0.export.json"} == before

    label_studio_export(loaded, ["unknown", *answers[1:]], "json", to_label / "cycle0.export.json")
    main_al.main([*argv, "--resume"])  # cycle 1: JSON-MIN at the default place
    loaded, answers = query(1)
    label_studio_export(loaded, answers, "min", to_label / "cycle1.export.json")
    main_al.main([*argv, "--resume"])  # cycle 2: CSV given with --answers, elsewhere
    loaded, answers = query(2)
    main_al.main([*argv, "--resume", "--answers", label_studio_export(loaded, answers, "csv", tmp_path / "ls.csv")])
    images = {r["path"]: r for r in read_rows(out / "images.csv")}
    given = {p: r["label"] for p, r in images.items() if r["labeled_in"] in ("0", "1", "2")}
    first = json.load(open(to_label / "cycle0.tasks.json"))[0]["data"]["path"]
    assert len(given) == 30 and given.pop(first) == "unknown" and all(truth[p] == n for p, n in given.items())
