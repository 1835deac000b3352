"""LfOSA (issue #7): the query rules, the open-set bookkeeping and metrics, the network and losses,
and end-to-end runs of AL_center.py and AL_center_temperature.py on digits (5 known classes)."""

import os

import numpy as np
import pytest
import torch
from conftest import ROOT, make_cifar, run_script, write_images

import AL_center
import AL_center_temperature
from config import tree
from models.lfosa import BottleneckResNet
from utils.core.cli import run_cli
from utils.core.distributed import Dist
from utils.core.openset import OpenSetPool, choose_known_classes, init_percent_pool, query_metrics
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS, read_config, read_cycles
from utils.methods.center_loss import CenterLoss, CenterLossTerm
from utils.protocols.lfosa import LabelSets, RandomRotation, parse_args, run_name, temperature_cross_entropy
from utils.samplers import av_scores, get_strategy, known_posteriors, max_activations, top_k
from utils.samplers.registry import Need

DIGITS = ["--dataset", "digits", "--known-class", "5", "--init-percent", "8", "--query-batch", "20",
          "--max-epoch", "2", "--quiet", "--set", "WIDTH=8"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- query rules

def bimodal(rng, n_low, n_high, low=2.0, high=9.0):
    values = np.concatenate([rng.normal(low, 0.5, n_low), rng.normal(high, 0.5, n_high)])
    return values, np.r_[np.zeros(n_low, bool), np.ones(n_high, bool)]


def test_gmm_scoring_picks_the_high_activation_mode():
    rng = np.random.default_rng(0)
    a, a_high = bimodal(rng, 300, 100)
    b, b_high = bimodal(rng, 50, 150, low=-1.0, high=4.0)  # the other class sits lower: a global cut would fail
    values, high = np.concatenate([a, b]), np.concatenate([a_high, b_high])
    groups = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    scores = known_posteriors(values, groups, seed=3).numpy()
    assert scores[high].min() > 0.9 and scores[~high].max() < 0.1
    assert high[top_k(scores, 250)].all()  # both classes' high modes, although b's is below a's low-mode tail
    assert np.array_equal(scores, known_posteriors(values, groups, seed=3).numpy())  # seeded


def test_samples_predicted_unknown_score_zero_and_lonely_classes_too():
    rng = np.random.default_rng(1)
    K = 3
    logits = torch.from_numpy(rng.normal(0, 1, (400, K + 1)).astype(np.float32))
    predicted = np.r_[np.zeros(150, int), np.ones(150, int), np.full(99, K), [2]]  # class 2: one sample
    values, _ = bimodal(rng, 200, 200)
    logits[np.arange(400), predicted] = torch.from_numpy(values.astype(np.float32)) + 3
    mav, argmax = max_activations(logits)
    assert torch.equal(argmax, torch.from_numpy(predicted)) and torch.equal(mav, logits.max(1).values)
    lfosa = av_scores(logits, seed=0, unknown_class=K)
    assert (lfosa[predicted == K] == 0).all() and lfosa[399] == 0
    assert lfosa[predicted < 2].max() > 0.9
    based = av_scores(logits, seed=0)  # AV_based: the predicted-unknown group is ranked like any class
    assert based[predicted == K].max() > 0.5 and torch.equal(based[predicted < 2], lfosa[predicted < 2])


def test_strategies_are_registered_under_the_seed_names():
    assert get_strategy("AV_temperature").name == get_strategy("lfosa").name == "AV_temperature"
    assert get_strategy("AV_temperature").needs == {Need.UNKNOWN_CLASS}
    for name in ("AV_based", "AV_uncertainty", "Max_AV", "KMeans", "BALD", "random"):
        get_strategy(name)


# ----------------------------------------------------------------------------- open-set bookkeeping

def test_init_percent_pool_counts():
    targets = np.repeat(np.arange(10), 10)  # 10 classes x 10 images
    pool = init_percent_pool(targets, np.arange(3), 20, seed=4)
    assert len(pool.labeled_idx) == 6 and set(targets[pool.labeled_idx]) <= {0, 1, 2}  # floor(30 * 20 / 100)
    assert len(pool.pool_idx) == 94 and pool.num_known == 30
    assert not set(pool.labeled_idx) & set(pool.pool_idx)
    assert np.array_equal(pool.labeled_idx, init_percent_pool(targets, np.arange(3), 20, seed=4).labeled_idx)
    subset = init_percent_pool(targets, np.arange(3), 50, seed=4, indices=np.arange(0, 100, 2))
    assert len(subset.labeled_idx) == 7 and subset.num_known == 15 and len(subset.pool_idx) == 43
    chosen = choose_known_classes(10, 3, random=True, seed=1)
    assert len(chosen) == 3 and np.array_equal(chosen, np.sort(chosen))
    assert np.array_equal(chosen, choose_known_classes(10, 3, random=True, seed=1))
    assert OpenSetPool(np.array([7, 2]), None, None, 0).label_map(10).tolist() == [2, 2, 1, 2, 2, 2, 2, 0, 2, 2]


def test_recall_and_precision_of_a_hand_made_query():
    targets = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    pool = OpenSetPool(np.array([0, 1]), np.array([0, 1]), np.arange(2, 10), num_known=5)
    queried = np.array([4, 5, 6, 7])  # classes 0, 1, 2, 3: two known
    assert query_metrics(pool, targets, queried, 2 + 2) == {"n_queried": 4, "n_queried_known": 2,
                                                            "precision": 0.5, "recall": 0.8}


def test_queried_unknowns_leave_the_pool():
    sets = LabelSets(np.array([0, 1]), np.array([5]), {})
    assert sets.pool(np.arange(8)).tolist() == [2, 3, 4, 6, 7]


# ----------------------------------------------------------------------------- network, losses, augmentation

def test_bottleneck_resnet_has_a_2d_feature_and_splits_at_its_dropout():
    model = BottleneckResNet([2, 2, 2, 2], 6, in_channels=1, width=8, dropout=0.2).eval()
    x = torch.randn(4, 1, 8, 8)
    out = model(x)
    assert out.logits.shape == (4, 6) and out.features.shape == (4, 2)
    assert torch.allclose(model.mc_head(model.mc_trunk(x)).logits, out.logits)


def test_center_loss_ignores_unknowns_and_its_weight_does_not_scale_the_centers():
    loss = CenterLoss(2, 2)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    features, labels = torch.tensor([[1.0, 0.0], [1.0, 3.0], [9.0, 9.0]]), torch.tensor([0, 1, 2])
    assert loss(features, labels).item() == pytest.approx((1 + 4) / 3)  # label 2 = K: no center, counts in B
    moved = []
    for weight in (0.5, 2.0):
        torch.manual_seed(0)
        term = CenterLossTerm(2, 2, weight, lr=0.1, dist=Dist())
        before = term.loss.centers.detach().clone()
        term(features, labels).backward()
        term.step()
        moved.append(term.loss.centers.detach() - before)
    assert torch.allclose(moved[0], moved[1]) and moved[0].abs().sum() > 0
    off = CenterLossTerm(2, 2, 0.0, lr=0.1, dist=Dist())
    assert off(features, labels).item() == 0


def test_temperature_cross_entropy_divides_each_row_by_its_temperature():
    logits, targets = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0]]), torch.tensor([0, 2])  # row 2: unknown (K=2)
    loss = temperature_cross_entropy(0.5, 2.0, unknown_class=2)(logits, targets)
    expected = torch.nn.functional.cross_entropy(logits / torch.tensor([[0.5], [2.0]]), targets)
    assert loss.item() == pytest.approx(expected.item())


def test_rotation_keeps_the_centre_and_blackens_corners():
    from utils.core.data import BatchTransform

    torch.manual_seed(0)
    base = BatchTransform((0.5,), (0.25,))
    white = torch.full((8, 1, 16, 16), 255, dtype=torch.uint8)
    rotated = RandomRotation(base, 15)(white)
    assert torch.allclose(rotated[:, :, 6:10, 6:10], base(white)[:, :, 6:10, 6:10])
    black = (0 - 0.5) / 0.25
    assert ((rotated == black).flatten(1).any(1)).float().mean() > 0.5  # most images got black corners
    assert torch.equal(RandomRotation(base, 0)(white), base(white))


# ----------------------------------------------------------------------------- end-to-end

def labeled_sets(out):
    folder = os.path.join(out, "labeled")
    return {name: np.load(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def check_run(out, cycles, query):
    """Complete results folder; the open-set columns add up; nothing queried twice; only known labeled."""
    from utils.core.data import build_data

    assert {"config.json", "cycles.csv", "state.json", "labeled", "checkpoints", "tb"} <= set(os.listdir(out))
    with open(os.path.join(out, "cycles.csv")) as fh:
        assert fh.readline().strip().split(",") == CYCLE_COLUMNS + OPENSET_COLUMNS
    rows = read_cycles(out)
    assert [r["cycle"] for r in rows] == list(range(cycles))
    assert all(r["n_queried"] == query and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 for r in rows)
    assert all(b["n_labeled"] - a["n_labeled"] == a["n_queried_known"] for a, b in zip(rows, rows[1:]))
    known = read_config(out)["derived"]["known_classes"]
    checkpoint = torch.load(os.path.join(out, "checkpoints", "trial0.pt"), weights_only=True)
    labeled, invalid = checkpoint["labeled_idx"].numpy(), checkpoint["invalid_idx"].numpy()
    first = rows[0]["n_labeled"]
    queried = np.concatenate([labeled[first:], invalid])
    assert len(np.unique(np.concatenate([labeled, invalid]))) == len(labeled) + len(invalid) == first + cycles * query
    assert len(queried) == cycles * query
    targets = build_data("digits").train_targets
    assert np.isin(targets[labeled], known).all() and not np.isin(targets[invalid], known).any()
    assert np.array_equal(labeled_sets(out)[f"trial0_cycle{cycles - 1}.npy"], labeled)
    return rows


@pytest.mark.slow
def test_lfosa_on_digits_leaves_complete_results(tmp_path):
    out = str(tmp_path / "run")
    AL_center_temperature.main([*DIGITS, "--max-query", "3", "--known-T", "0.5", "--unknown-T", "0.5",
                                "--weight-cent", "0.1", "--out", out])
    rows = check_run(out, 3, 20)
    assert isinstance(rows[1]["precision"], float) and 0 <= rows[1]["precision"] <= 1
    derived = read_config(out)["derived"]
    assert derived["strategy_name"] == "AV_temperature" and derived["known_classes"] == [0, 1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["uncertainty", "random", "AV_based", "AV_uncertainty", "Max_AV", "KMeans",
                                      "BALD"])
def test_baselines_on_digits(tmp_path, strategy):
    out = str(tmp_path / "run")
    AL_center.main([*DIGITS, "--max-query", "2", "--max-epoch", "1", "--weight-cent", "0", "--query-strategy", strategy,
                    "--known-classes-random", "--out", out])
    check_run(out, 2, 20)
    assert read_config(out)["derived"]["strategy_name"] == get_strategy(
        {"uncertainty": "EntropySampling"}.get(strategy, strategy)).name


@pytest.mark.slow
def test_the_seed_commands_run_verbatim_on_cifar100_files(tmp_path, monkeypatch, capsys):
    root = make_cifar(str(tmp_path / "data"), n_train=1700, n_test=100, classes=100, hundred=True)
    monkeypatch.chdir(tmp_path)
    shrink = ["--max-query", "1", "--max-epoch", "1", "--set", "WIDTH=8", "--data-root", root, "--quiet"]
    AL_center.main("--gpu 0 --save-dir log_AL/ --weight-cent 0 --query-strategy uncertainty --init-percent 8 "
                   "--known-class 20 --query-batch 1500 --seed 1 --model resnet18 --dataset cifar100".split() + shrink)
    AL_center_temperature.main(
        "--gpu 0 --save-dir log_AL/ --weight-cent 0 --query-strategy AV_temperature --init-percent 8 --known-class 20 "
        "--query-batch 1500 --seed 1 --model resnet18 --known-T 0.5 --unknown-T 0.5 --modelB-T 1 "
        "--dataset cifar100".split() + shrink)
    assert sorted(os.listdir(tmp_path / "log_AL")) == [
        "resnet18_cifar100_known20_init8_batch1500_seed1_uncertainty",
        "temperature_resnet18_cifar100_known20_init8_batch1500_seed1_AV_temperature_unknown_T0.5_known_T0.5_modelB_T1.0"]
    for run in os.listdir(tmp_path / "log_AL"):
        row, = read_cycles(str(tmp_path / "log_AL" / run))
        assert row["n_labeled"] == 27 and row["n_queried"] == 1500  # 8 % of the 340 known images
    if not torch.cuda.is_available():
        assert "notice: --gpu 0 ignored" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    common = [*DIGITS, "--weight-cent", "0.5", "--trials", "2", "--device", "cpu"]
    AL_center_temperature.main([*common, "--max-query", "3", "--out", full])
    AL_center_temperature.main([*common, "--max-query", "1", "--trials", "1", "--out", resumed])
    AL_center_temperature.main([*common, "--cycles", "3", "--out", resumed, "--resume"])
    assert labeled_sets(full).keys() == labeled_sets(resumed).keys() and len(labeled_sets(full)) == 6
    assert all(np.array_equal(a, b) for a, b in zip(labeled_sets(full).values(), labeled_sets(resumed).values()))
    drop = ("train_seconds", "query_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_cycles(full)] == \
           [{k: v for k, v in r.items() if k not in drop} for r in read_cycles(resumed)]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_torchrun_writes_one_results_folder(tmp_path):
    out = str(tmp_path / "run")
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                        str(29600 + os.getpid() % 1000), os.path.join(ROOT, "AL_center_temperature.py"), *DIGITS,
                        "--max-query", "2", "--weight-cent", "0.5", "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 process(es) on cpu" in result.stdout and sorted(os.listdir(tmp_path)) == ["run"]
    check_run(out, 2, 20)


@pytest.mark.parametrize("script,argv,message", [
    (AL_center, ["--query-strategy", "NoSuchStrategy"], "unknown strategy"),
    (AL_center, ["--query-strategy", "AV_temperature"], "run it with AL_center_temperature.py"),
    (AL_center, ["--query-strategy", "AV_based2"], "use AV_based"),
    (AL_center, ["--known-class", "10"], "between 1 and 9"),
    (AL_center, ["--init-percent", "0"], "--init-percent"),
    (AL_center, ["--query-batch", "700", "--max-query", "2"], "budget larger than the pool"),
    (AL_center, ["--model", "resnet50"], "MODEL expects one of resnet18, resnet34"),
    (AL_center, ["--dataset", "cifar100"], "--download"),
    (AL_center, ["--set", "WIDHT=8"], "AL_center.py has no setting WIDHT"),
    (AL_center, ["--is-filter", "False"], "not supported"),
    (AL_center, ["--max-query", "0"], "--max-query 0: MAX_QUERY expects an integer >= 1"),
    (AL_center, ["--set", "BOTTLENECK=wide"], "--set BOTTLENECK=wide: BOTTLENECK expects an integer"),  # WIDTH: set
    (AL_center, ["--set", "WIDTH=16"], "--set WIDTH= and --set WIDTH both set WIDTH"),  # in DIGITS already
    (AL_center_temperature, ["--known-T", "0"], "KNOWN_T expects a number > 0"),
    (AL_center_temperature, ["--batch-size", "many"], "--batch-size many: BATCH_SIZE expects an integer"),
    (AL_center, ["--plot"], "--plot: the seed's per-epoch 2-d feature scatter is not supported"),
    (AL_center_temperature, ["--is-mini", "False"], "--is-mini: False is not supported"),
    (AL_center, ["--max-epoch", "3", "--epochs", "3"], "--max-epoch and --epochs both set MAX_EPOCH"),
    (AL_center, ["--init-percent", "101"], "--init-percent 101: INIT_PERCENT expects an integer in [1, 100]"),
    (AL_center, ["--query-strategy", "VAAL"], "trains networks of its own"),
])
def test_bad_input_is_one_line_exit_code_2_and_writes_nothing(tmp_path, capsys, script, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: script.main([*DIGITS, "--data-root", str(tmp_path / "data"), "--save-dir",
                                     str(tmp_path / "log_AL"), *argv]))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not os.listdir(tmp_path)


def exits_with_one_line(capsys, main, argv):
    """``main(argv)`` under run_cli: (exit code, the one line of stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return exit_info.value.code, err


BAD_SETS = [("FOO=1", "has no setting FOO"), ("BOTTLENECK=wide", "BOTTLENECK expects an integer"),
            ("ROTATION=[1,2]", "ROTATION expects a number"),
            ("KNOWN_CLASSES_RANDOM=maybe", "KNOWN_CLASSES_RANDOM expects True or False"),
            ("WEIGHT=1", "WEIGHT is a setting of main_TOD.py, not of")]  # a key of another script


@pytest.mark.parametrize("script,assignment,message", [
    *[(AL_center, a, m) for a, m in BAD_SETS], *[(AL_center_temperature, a, m) for a, m in BAD_SETS],
    (AL_center, "KNOWN_T=1", "KNOWN_T is a setting of AL_center_temperature.py, not of AL_center.py"),
    (AL_center_temperature, "KNOWN_T=warm", "KNOWN_T expects a number"),
])
def test_bad_set_is_one_line_exit_code_2_and_writes_nothing(tmp_path, capsys, script, assignment, message):
    save_dir = tmp_path / "log_AL"
    code, err = exits_with_one_line(capsys, script.main, [*DIGITS, "--data-root", str(tmp_path / "data"),
                                                          "--save-dir", str(save_dir), "--set", assignment])
    assert code == 2 and message in err, err
    assert not save_dir.exists() and not os.listdir(tmp_path)


@pytest.mark.parametrize("script", ["AL_center.py", "AL_center_temperature.py"])
def test_list_settings_lists_every_key_and_exits_0(tmp_path, capsys, monkeypatch, script):
    monkeypatch.chdir(tmp_path)
    main = {"AL_center.py": AL_center, "AL_center_temperature.py": AL_center_temperature}[script].main
    with pytest.raises(SystemExit) as exit_info:
        main(["--list-settings", "--set", "WIDTH=8"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == list(tree(script).keys) and f"{len(listed)} settings" in lines[0]
    assert any(line.startswith("WIDTH") and "= 8" in line for line in lines)
    temperature_only = {"KNOWN_T", "UNKNOWN_T", "MODELB_T"}
    assert (temperature_only & set(listed)) == (temperature_only if script == "AL_center_temperature.py" else set())
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("script", ["AL_center.py", "AL_center_temperature.py"])
def test_epochs_scales_the_stepsize_and_max_epoch_does_not(script):
    _, cfg = parse_args(["--epochs", "30"], script)
    assert cfg.MAX_EPOCH == 30 and cfg.STEPSIZE == 6 and cfg.scaled["STEPSIZE"]["from"] == 20
    _, cfg = parse_args(["--max-epoch", "30"], script)  # the seed's flag: the seed's StepLR(20) stays
    assert cfg.MAX_EPOCH == 30 and cfg.STEPSIZE == 20 and not cfg.scaled
    _, cfg = parse_args(["--epochs", "30", "--stepsize", "10"], script)  # an explicit step wins
    assert cfg.STEPSIZE == 10 and not cfg.scaled
    _, cfg = parse_args(["--cycles", "3"], script)
    assert cfg.MAX_QUERY == 3


def test_the_seed_flags_set_the_keys_and_run_control_stays_out_of_them():
    seed_flags = ("-d cifar100 -j 2 --batch-size 64 --lr-model 0.1 --lr-cent 0.2 --weight-cent 0 --max-epoch 5 "
                  "--max-query 4 --query-batch 100 --query-strategy uncertainty --stepsize 3 --gamma 0.1 "
                  "--model resnet34 --eval-freq 2 --known-class 30 --known-classes-random --init-percent 8 --seed 3 "
                  "--known-T 0.5 --unknown-T 0.5 --modelB-T 1 --gpu 0 --use-cpu --save-dir x --print-freq 10 "
                  "--is-filter True --is-mini True")
    args, cfg = parse_args(seed_flags.split(), "AL_center_temperature.py")
    assert dict(cfg.as_dict(), MEAN=None, STD=None) == {
        **{k: key.default for k, key in cfg.tree.items()}, "DATASET": "cifar100", "BATCH_SIZE": 64,
        "LR_MODEL": 0.1, "LR_CENT": 0.2, "WEIGHT_CENT": 0.0, "MAX_EPOCH": 5, "MAX_QUERY": 4, "QUERY_BATCH": 100,
        "QUERY_STRATEGY": "uncertainty", "STEPSIZE": 3, "GAMMA": 0.1, "MODEL": "resnet34", "EVAL_FREQ": 2,
        "KNOWN_CLASS": 30, "KNOWN_CLASSES_RANDOM": True, "INIT_PERCENT": 8, "SEED": 3, "UNKNOWN_T": 0.5}
    assert cfg.MEAN == [0.5071, 0.4867, 0.4408] and cfg.sources["MEAN"] == "the seed's cifar100 normalisation"
    assert (args.workers, args.gpu, args.use_cpu, args.save_dir) == (2, "0", True, "x")
    assert run_name(cfg, "cifar100") == ("temperature_resnet34_cifar100_known30_init8_batch100_seed3_uncertainty"
                                         "_unknown_T0.5_known_T0.5_modelB_T1.0_randomknown")
    _, svhn = parse_args(["--dataset", "svhn"], "AL_center.py")
    assert svhn.MEAN is None and svhn.STD is None  # the dataset's own normalisation


def make_tinyimagenet(root, classes, per_class, size):
    """tiny-imagenet-200's layout: train/<wnid>/images/*, val/images/* with val/val_annotations.txt."""
    folder = os.path.join(root, "tiny-imagenet-200")
    lines = []
    for c in range(classes):
        write_images(os.path.join(folder, "train", f"n{c:08d}", "images"), per_class, (size, size), seed=c,
                     ext="JPEG")
        write_images(os.path.join(folder, "val", "images", f"c{c}"), 3, (size, size), seed=100 + c, ext="JPEG")
        for name in sorted(os.listdir(os.path.join(folder, "val", "images", f"c{c}"))):
            os.rename(os.path.join(folder, "val", "images", f"c{c}", name),
                      os.path.join(folder, "val", "images", f"c{c}_{name}"))
            lines.append(f"c{c}_{name}\tn{c:08d}\t0\t0\t{size}\t{size}\n")
        os.rmdir(os.path.join(folder, "val", "images", f"c{c}"))
    with open(os.path.join(folder, "val", "val_annotations.txt"), "w") as fh:
        fh.writelines(lines)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("script", [AL_center, AL_center_temperature])
@pytest.mark.parametrize("kind", ["folder", "tinyimagenet"])
def test_image_size_decodes_image_files_under_both_scripts(tmp_path, script, kind):
    if kind == "folder":  # PATH/train/<class>/*, PATH/test/<class>/*: K + 1 = 3 classes of 20x24 images
        path = tmp_path / "images"
        for c in range(3):
            write_images(str(path / "train" / f"class{c}"), 10, (20, 24), seed=c)
            write_images(str(path / "test" / f"class{c}"), 3, (20, 24), seed=10 + c)
        dataset = ["--dataset", f"folder:{path}"]
    else:
        dataset = ["--dataset", "tinyimagenet", "--data-root", make_tinyimagenet(str(tmp_path / "data"), 3, 10, 24)]
    out = str(tmp_path / "run")
    script.main([*dataset, "--known-class", "2", "--init-percent", "50", "--query-batch", "4", "--max-query", "2",
                 "--max-epoch", "1", "--quiet", "--set", "WIDTH=8", "--set", "IMAGE_SIZE=16", "--out", out])
    config = read_config(out)
    assert config["settings"]["IMAGE_SIZE"] == 16 and config["run"]["image_shape"] == [3, 16, 16]
    rows = read_cycles(out)
    assert [r["n_labeled"] for r in rows][0] == 10 and all(r["n_queried"] == 4 for r in rows)
