"""plot.py and utils/reporting/summary.py on hand-written results folders: accuracy against labels, and for
open-set runs selection recall, selection precision and accuracy per cycle, one line per setting
(seeds pooled); AUBC, final accuracy, the paired difference against random, the summary table;
labels from the settings that differ; folders of runs; readable figures with 20 runs; bad input
(--out, damaged runs, --help) as one line and exit code 2 with nothing written."""

import csv
import io
import json
import os
import warnings

import pytest

import config
import plot
from utils.core.cli import run_cli
from utils.core.errors import UserError
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS
from utils.reporting import summary

PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF"
BASE_COLUMNS = CYCLE_COLUMNS[:6]  # the columns of folders written before balanced_acc and min_class_acc
OPENSET_HEADER = ",".join(BASE_COLUMNS + OPENSET_COLUMNS) + "\n"


def write_run(folder, label, seed, rows, header=OPENSET_HEADER):
    folder.mkdir(parents=True)
    (folder / "cycles.csv").write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
    settings = {"SEED": seed, "MAX_QUERY": 10 + seed, "QUERY_STRATEGY": label}  # MAX_QUERY may differ on resume
    config = {"label": label, "script": "AL_center.py", "settings": settings, "resumable": ["MAX_QUERY", "TRIALS"]}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def lfosa_runs(root):
    """Two seeds of one setting (one line) and a second setting."""
    a1 = write_run(root / "a_seed1", "lfosa", 1, [(0, 0, 10, 20.0, 1, 1, 5, 2, 0.4, 0.4),
                                                  (0, 1, 12, 30.0, 1, 1, 5, 4, 0.8, 0.8)])
    a2 = write_run(root / "a_seed2", "lfosa", 2, [(0, 0, 10, 22.0, 1, 1, 5, 4, 0.6, 0.8),
                                                  (0, 1, 14, 34.0, 1, 1, 5, 1, 0.7, 0.2)])
    b = write_run(root / "b_seed1", "random", 1, [(0, 0, 10, 21.0, 1, 1, 5, 1, 0.2, 0.2)])
    return [a1, a2, b]


def read_png(path):
    with open(path, "rb") as fh:
        return fh.read(8)


def test_runs_differing_only_in_seed_are_one_line_with_mean_and_std(tmp_path):
    groups = plot.load_groups(lfosa_runs(tmp_path))
    assert [(label, len(g.rows)) for label, g in zip(summary.make_labels(groups), groups)] == [("lfosa", 4),
                                                                                            ("random", 1)]
    xs, mean, std, counts = plot.curve(groups[0].rows, "precision", x="cycle")
    assert xs.tolist() == [0, 1] and mean.tolist() == pytest.approx([0.6, 0.5]) and std.tolist() == pytest.approx(
        [0.2, 0.3]) and counts == [2, 2]


def test_plot_writes_the_three_open_set_pngs_and_accuracy_against_labels(tmp_path):
    runs = lfosa_runs(tmp_path / "runs")
    plot.main([*runs, "--out", str(tmp_path / "figures")])
    for name in ("accuracy", "recall", "precision", "accuracy_per_cycle"):
        assert read_png(tmp_path / "figures" / f"{name}.png") == PNG
    plot.main([*runs, "--out", str(tmp_path / "mine.png")])
    for name in ("mine", "mine_recall", "mine_precision", "mine_accuracy_per_cycle"):
        assert read_png(tmp_path / f"{name}.png") == PNG


def test_without_arguments_plot_reads_log_al_and_results(tmp_path, monkeypatch):
    lfosa_runs(tmp_path / "log_AL")
    write_run(tmp_path / "results" / "tod", "tod", 0, [(0, 0, 10, 50.0, 1, 1)],
              header=",".join(BASE_COLUMNS) + "\n")
    monkeypatch.chdir(tmp_path)
    plot.main([])
    assert sorted(p.name for p in (tmp_path / "log_AL").glob("*.png")) == [
        "accuracy.png", "accuracy_per_cycle.png", "penalty_matrix.png", "precision.png", "recall.png"]
    assert sorted(p.name for p in (tmp_path / "results").glob("*.png")) == ["accuracy.png"]  # no open-set columns


def test_nothing_to_plot_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no runs to plot"):
        plot.main([])
    with pytest.raises(UserError, match="not a run folder"):
        plot.main([str(tmp_path)])


# --------------------------------------------------------------------------- summaries and readable plots
DEEPAL = "main_al.py --protocol deepal"
CLOSED_HEADER = ",".join(BASE_COLUMNS) + "\n"


def write_deepal_run(folder, strategy, accs, n_labeled=(10, 20, 40), seed=1, lr=0.01, seconds=(2.0, 0.5), **more):
    """A main_al.py --protocol deepal results folder: ``accs`` holds one list of test accuracies per trial."""
    rows = [(t, c, n, acc, seconds[0], seconds[1]) for t, trial in enumerate(accs)
            for c, (n, acc) in enumerate(zip(n_labeled, trial))]
    folder.mkdir(parents=True)
    (folder / "cycles.csv").write_text(CLOSED_HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows))
    settings = {"PROTOCOL": "deepal", "STRATEGY": strategy, "MODEL": "LeNet", "DATASET": "digits", "LR": lr,
                "SEED": seed, "TRIALS": len(accs), "CYCLES": len(n_labeled), **more}
    config = {"script": DEEPAL, "label": f"digits LeNet {strategy}", "settings": settings,
              "resumable": ["CYCLES", "TRIALS"], "derived": {"strategy_name": strategy},
              "run": {"command": ["main_al.py", "--strategy", strategy], "out": str(folder)}}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def magic(path, n=8):
    with open(path, "rb") as fh:
        return fh.read(n)


def table_of(folders):
    groups = plot.load_groups(folders)
    return {s.label: s for s in summary.summary_table(groups, summary.make_labels(groups))}


def test_aubc_is_the_trapezoid_area_divided_by_the_label_range(tmp_path):
    assert summary.aubc([10, 20, 40], [50, 60, 80]) == pytest.approx((10 * 55 + 20 * 70) / 30) == 65.0
    assert summary.aubc([40, 10, 20], [80, 50, 60]) == 65.0  # points in any order
    assert summary.aubc([10], [42.0]) == 42.0 and summary.aubc([0.1, 0.3], [0.5, 0.7]) == pytest.approx(0.6)
    run = write_deepal_run(tmp_path / "run", "EntropySampling", [[50, 60, 80]])  # a hand-made cycles.csv
    [group] = plot.load_groups([run])
    assert list(summary.trial_aubc(group).values()) == [65.0]


def test_final_accuracy_and_aubc_are_mean_and_std_over_trials(tmp_path):
    run = write_deepal_run(tmp_path / "run", "EntropySampling", [[50, 60, 80], [50, 60, 70]], seconds=(3.0, 1.5))
    [row] = table_of([run]).values()
    assert row.trials == 2 and (row.final_mean, row.final_std) == pytest.approx((75.0, 5.0))  # std with ddof=0
    aubc2 = (10 * 55 + 20 * 65) / 30
    assert (row.aubc_mean, row.aubc_std) == pytest.approx(((65 + aubc2) / 2, (65 - aubc2) / 2))
    assert (row.train_seconds, row.query_seconds) == (3.0, 1.5) and row.recall_aubc_mean is None


def test_paired_difference_and_wins_against_random(tmp_path):
    sweep = tmp_path / "cmp"
    random = write_deepal_run(sweep / "RandomSampling", "RandomSampling", [[50, 60, 80], [50, 60, 80], [50, 60, 80]])
    entropy = write_deepal_run(sweep / "EntropySampling", "EntropySampling",  # AUBC 67, 66, 64: +2, +1, -1
                               [[52, 62, 82], [51, 61, 81], [49, 59, 79]])
    other_lr = write_deepal_run(tmp_path / "lr" / "BadgeSampling", "BadgeSampling", [[90, 90, 90]], lr=0.1)
    table = table_of([random, entropy])
    paired = table["EntropySampling"].vs_reference
    assert (paired.diff, paired.wins, paired.trials) == (pytest.approx(2 / 3), 2, 3)
    assert table["RandomSampling"].vs_reference is None
    table = table_of([random, entropy, other_lr])  # another learning rate: not paired with this random run
    assert table["LR=0.1, STRATEGY=BadgeSampling"].vs_reference is None
    assert table["LR=0.01, STRATEGY=EntropySampling"].vs_reference.trials == 3
    # only the trials both ran count; a trial's AUBC spans the cycles both finished
    short = write_deepal_run(tmp_path / "short" / "EntropySampling", "EntropySampling", [[60, 70]])
    paired = table_of([random, short])["EntropySampling"].vs_reference
    assert (paired.diff, paired.wins, paired.trials) == (pytest.approx(10.0), 1, 1)
    # the rethinking protocol's AL_METHOD=random and the LfOSA scripts' QUERY_STRATEGY=random are random too
    assert summary.is_random(summary.RunRecord("x", {"script": "main_al.py --protocol rethinking",
                                               "settings": {"AL_METHOD": "random"}}, []))
    assert summary.strategy_key(summary.RunRecord("x", {"script": "AL_center.py", "settings": {"QUERY_STRATEGY": "x"}},
                                            [])) == "QUERY_STRATEGY"


def test_the_strategy_key_is_what_config_json_records_and_the_old_table_agrees_with_the_trees():
    settings = {"SAMPLING": "TOD", "STRATEGY": "EntropySampling"}
    recorded = summary.RunRecord("x", {"script": "main_TOD.py", "strategy_key": "STRATEGY", "settings": settings}, [])
    assert summary.strategy_key(recorded) == "STRATEGY"  # not the old table's SAMPLING
    assert summary.strategy_key(summary.RunRecord("x", {"script": "main_TOD.py", "strategy_key": None,
                                                        "settings": settings}, [])) is None
    old = summary.RunRecord("x", {"script": "main_TOD.py", "settings": settings}, [])
    assert summary.strategy_key(old) == "SAMPLING"
    # folders written before config.json recorded the key read the old table: it names what the trees name
    for script, key in summary.OLD_STRATEGY_KEYS.items():
        assert config.tree(script).strategy_key == key, script


def test_summary_table_in_markdown_and_csv_from_two_tiny_runs(tmp_path, capsys):
    sweep = tmp_path / "cmp"
    write_deepal_run(sweep / "RandomSampling", "RandomSampling", [[50, 60, 80]], seconds=(2.0, 0.25))
    write_deepal_run(sweep / "EntropySampling", "EntropySampling", [[50, 62, 86]], seconds=(2.0, 0.75))
    plot.main([str(sweep)])
    markdown = (sweep / "summary.md").read_text()
    assert markdown in capsys.readouterr().out  # printed as written
    lines = markdown.splitlines()
    assert lines[0] == ("| run | trials | AUBC | AUBC 95 % CI | final acc | final 95 % CI | query s/cycle | "
                        "train s/cycle | times beaten | vs RandomSampling |")
    few = "too few trials (1)"  # one trial: no interval, said in words
    assert lines[2] == (f"| EntropySampling | 1 | 68.00 ± 0.00 | {few} | 86.00 ± 0.00 | {few} | 0.75 | 2.00 | 0.00 | "
                        f"+3.00 {few} (1/1), p — |")
    assert lines[3] == (f"| RandomSampling | 1 | 65.00 ± 0.00 | {few} | 80.00 ± 0.00 | {few} | 0.25 | 2.00 | 0.00 | "
                        "— |")  # sorted by AUBC
    assert "ddof=0" in lines[-1] and "recall" not in lines[0]
    rows = list(csv.DictReader(io.StringIO((sweep / "summary.csv").read_text())))
    assert [r["run"] for r in rows] == ["EntropySampling", "RandomSampling"]
    assert rows[0]["aubc_mean"] == "68.0" and rows[0]["final_std"] == "0.0" and rows[0]["diff_aubc"] == "3.0"
    assert (rows[0]["wins"], rows[0]["paired_trials"]) == ("1", "1") and rows[1]["diff_aubc"] == ""
    assert rows[0]["aubc_ci_low"] == rows[0]["diff_aubc_ci_high"] == few and rows[0]["p_value"] == ""
    assert rows[0]["diff_final"] == "6.0" and rows[0]["reference"] == "RandomSampling"
    assert rows[0]["query_seconds"] == "0.75" and rows[1]["recall_aubc_mean"] == ""
    assert [p.name for p in sorted(sweep.glob("*.png"))] == ["accuracy.png", "penalty_matrix.png"]


def test_open_set_runs_get_a_recall_aubc_column_and_pooled_seeds_count_as_trials(tmp_path):
    plot.main([*lfosa_runs(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    lines = (tmp_path / "out" / "summary.md").read_text().splitlines()
    assert lines[0].split(" | ")[6] == "recall AUBC"
    lfosa = next(line for line in lines if line.startswith("| lfosa |"))
    # recall per trial (0.4, 0.8 at 10, 12 labels) -> 0.6; (0.6, 0.7 at 10, 14) -> 0.65
    assert [lfosa.split(" | ")[i] for i in (1, 2, 4, 6)] == ["2", "26.50 ± 1.50", "32.00 ± 2.00", "0.625 ± 0.025"]
    # seed 1's trial 0 against the random run of seed 1, on cycle 0
    assert lfosa.endswith("| -1.00 too few trials (1) (0/1), p — |")


def test_labels_come_from_the_settings_that_differ(tmp_path):
    def labels(*folders):
        return summary.make_labels(plot.load_groups([str(f) for f in folders]))

    a = write_deepal_run(tmp_path / "a", "EntropySampling", [[50]])
    b = write_deepal_run(tmp_path / "b", "BadgeSampling", [[50]])
    c = write_deepal_run(tmp_path / "c", "EntropySampling", [[50]], lr=0.1)
    d = write_deepal_run(tmp_path / "d", "EntropySampling", [[50]], lr=0.1, seed=2)  # pooled with c
    assert labels(a) == ["digits LeNet EntropySampling"]  # one run: its config.json label
    assert labels(a, b) == ["EntropySampling", "BadgeSampling"]  # only the strategy differs: its name
    assert labels(a, c) == ["LR=0.01", "LR=0.1"]  # one other key: that key's value
    assert labels(b, c, d) == ["LR=0.01, STRATEGY=BadgeSampling", "LR=0.1, STRATEGY=EntropySampling"]
    e = write_deepal_run(tmp_path / "e", "EntropySampling", [[50]], DATASET="folder:/home/me/data/cats")
    f = write_deepal_run(tmp_path / "f", "EntropySampling", [[50]], DATASET="folder:/home/me/data/dogs")
    g = write_deepal_run(tmp_path / "g", "EntropySampling", [[50]], DATASET="folder:/srv/images")
    assert labels(e, f) == ["DATASET=cats", "DATASET=dogs"]  # neither the common prefix nor absolute paths
    assert labels(a, g) == ["DATASET=digits", "DATASET=folder:…/images"]
    for label in labels(a, b, c, e, f, g):
        assert str(tmp_path) not in label


def test_labels_flag_names_the_lines_and_a_wrong_count_is_a_user_error(tmp_path):
    sweep = tmp_path / "cmp"
    write_deepal_run(sweep / "A", "EntropySampling", [[50, 60]])
    write_deepal_run(sweep / "B", "BadgeSampling", [[50, 70]])
    plot.main([str(sweep / "A"), str(sweep / "B"), "--labels", "entropy, badge"])
    assert [r["run"] for r in csv.DictReader(io.StringIO((sweep / "summary.csv").read_text()))] == ["badge", "entropy"]
    out = tmp_path / "figs"
    with pytest.raises(UserError, match="--labels names 3 line.*the runs make 2.*EntropySampling; BadgeSampling"):
        plot.main([str(sweep / "A"), str(sweep / "B"), "--labels", "x,y,z", "--out", str(out)])
    assert not out.exists()


def test_parent_folders_are_searched_for_runs(tmp_path, capsys):
    write_deepal_run(tmp_path / "runs" / "cmp" / "RandomSampling", "RandomSampling", [[50, 60]])
    write_deepal_run(tmp_path / "runs" / "cmp" / "EntropySampling", "EntropySampling", [[50, 62]])
    deep = write_deepal_run(tmp_path / "runs" / "old" / "lr" / "BadgeSampling", "BadgeSampling", [[40, 70]], lr=0.1)
    assert plot.find_runs(str(tmp_path / "runs")) == sorted([
        str(tmp_path / "runs" / "cmp" / "EntropySampling"), str(tmp_path / "runs" / "cmp" / "RandomSampling"), deep])
    plot.main([str(tmp_path / "runs" / "cmp"), deep])  # a folder of runs and a run folder
    assert (tmp_path / "runs" / "cmp" / "summary.md").is_file()  # next to the figures: in the folder given
    assert len(capsys.readouterr().out.split("LR=")) == 4  # three lines, labeled by LR and STRATEGY
    with pytest.raises(UserError, match="does not exist"):
        plot.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "figs")])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="holds none"):
        plot.main([str(tmp_path / "runs" / "cmp"), str(tmp_path / "empty"), "--out", str(tmp_path / "figs")])
    assert not (tmp_path / "figs").exists()


# --------------------------------------------------------------------------- bad input
def run_plot(argv, capsys):
    """(exit code, stdout, stderr) of plot.py's main(argv) in this process; a python warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: plot.main(argv))
            raise SystemExit(0)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def listing(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, subfolders, files in os.walk(root) for name in subfolders + files)


def assert_refused(argv, tmp_path, capsys, *fragments):
    """plot.py ``argv`` stops with one line holding ``fragments``, exit code 2, and writes nothing."""
    before = listing(tmp_path)
    code, out, err = run_plot(argv, capsys)
    assert (code, out, err.count("\n")) == (2, "", 1) and "error: " in err, err
    for fragment in fragments:
        assert fragment in err
    assert listing(tmp_path) == before


BAD_OUTS = [  # (--out, relative to tmp_path; what the line says)
    ("", "expected a path"),
    ("afile/x.png", "--out afile is a file, not a folder"),  # the folder the figures go into
    ("afile", "--out afile is a file, not a folder"),
    ("afile/sub/", "lies under the file"),
    ("/dev/null", "/dev/null is a file, not a folder"),
    ("fig.png", "fig.png exists and is not a file"),  # a folder named like a figure
]


@pytest.mark.parametrize("out, says", BAD_OUTS, ids=[out or "empty" for out, _ in BAD_OUTS])
def test_an_out_that_cannot_receive_the_figures_is_one_line(out, says, tmp_path, capsys, monkeypatch):
    run = write_deepal_run(tmp_path / "runs" / "a", "EntropySampling", [[50, 60]])
    (tmp_path / "afile").write_text("")
    (tmp_path / "fig.png").mkdir()
    monkeypatch.chdir(tmp_path)
    assert_refused([run, "--out", out], tmp_path, capsys, says, *(["choose another --out"] if out else []))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any folder")
def test_an_out_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    run = write_deepal_run(tmp_path / "runs" / "a", "EntropySampling", [[50, 60]])
    (tmp_path / "locked").mkdir(mode=0o555)
    try:
        assert_refused([run, "--out", str(tmp_path / "locked")], tmp_path, capsys, "is not writable")
    finally:
        (tmp_path / "locked").chmod(0o755)


GOOD_CSV = CLOSED_HEADER + "0,0,10,50.0,1,1\n0,1,20,60.0,1,1\n"
BAD_RUNS = [  # (files of the one run in the folder, what the line says besides the folder)
    ({}, "holds none"),  # an empty subfolder: no run at all
    ({"cycles.csv": CLOSED_HEADER}, "has no finished cycle"),
    ({"cycles.csv": "garbage; really\nnot a table {\n"}, "no trial, cycle, n_labeled column"),
    ({"cycles.csv": bytes(range(128, 256))}, "UnicodeDecodeError"),
    ({"cycles.csv": "name,age\nbob,3\n"}, "no trial, cycle, n_labeled column"),
    ({"cycles.csv": "trial,cycle,n_labeled\n0,0,10\n"}, "has no test_acc value"),
    ({"cycles.csv": GOOD_CSV, "config.json": "{damaged"}, "config file"),
    (None, "does not exist"),  # a path that does not exist
]


@pytest.mark.parametrize("files, says", BAD_RUNS, ids=["no runs", "header only", "garbage", "binary", "foreign",
                                                       "no accuracy", "damaged config", "nonexistent"])
def test_no_readable_run_is_one_line_naming_the_folder(files, says, tmp_path, capsys):
    folder = tmp_path / "sweep"
    if files is not None:
        (folder / "run").mkdir(parents=True)
    for name, content in (files or {}).items():
        (folder / "run" / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused([str(folder)], tmp_path, capsys, str(folder), says, "; pass ")


def test_unreadable_runs_are_skipped_with_a_warning_when_others_are_readable(tmp_path, capsys):
    good = write_deepal_run(tmp_path / "sweep" / "good", "EntropySampling", [[50, 60]])
    bad = tmp_path / "sweep" / "bad"
    bad.mkdir()
    (bad / "cycles.csv").write_text("garbage; really\nnot a table {\n")
    code, out, err = run_plot([str(tmp_path / "sweep")], capsys)
    assert code == 0 and err.splitlines() == [f"warning: skipping {bad}: {bad / 'cycles.csv'} is not a results "
                                              "table of this project (no trial, cycle, n_labeled column)"]
    assert magic(tmp_path / "sweep" / "accuracy.png") == PNG and "digits LeNet EntropySampling" in out
    with pytest.raises(UserError, match="not a results table"):  # without a list for them, no run is skipped
        plot.load_groups([good, str(bad)])


def test_help_says_what_is_drawn_from_what_and_every_default(capsys):
    code, out, _ = run_plot(["--help"], capsys)
    parser = plot.build_parser()
    assert code == 0 and " ".join(parser.description.split()) in " ".join(out.split())
    assert "from the cycles.csv" in parser.description and "test accuracy against the number" in parser.description
    options = [a for a in parser._actions if a.dest != "help"]
    assert len(options) == 9 and all("(default: " in a.help for a in options), [a.dest for a in options]


def many_runs(root, n):
    strategies = [f"Strategy{i:02d}WithALongerName" for i in range(n)]
    return [write_deepal_run(root / s, s, [[40 + i, 50 + i, 60 + i + j, 70 + i] for j in range(2)],
                             n_labeled=(10, 20, 40, 80)) for i, s in enumerate(strategies)]


def legend_outside(runs, **options):
    groups = plot.load_groups(runs)
    lines = [(label, g.rows, i) for i, (label, g) in enumerate(zip(summary.make_labels(groups), groups))]
    fig = plot.draw(lines, "test_acc", "test accuracy (%)", **options)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    from matplotlib.transforms import Bbox

    legend = ax.get_legend().get_window_extent(renderer)  # the axes with their tick labels and axis labels:
    axes = Bbox.union([ax.get_window_extent(renderer), ax.xaxis.get_tightbbox(renderer),
                       ax.yaxis.get_tightbbox(renderer)])
    styles = {(line.get_color(), line.get_linestyle(), line.get_marker()) for line in ax.get_lines()}
    bands = len(ax.collections)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return (legend.x0 >= axes.x1 or legend.y1 <= axes.y0), len(styles), bands


def test_twenty_runs_are_drawn_with_the_legend_outside_and_distinct_styles(tmp_path):
    runs = many_runs(tmp_path / "sweep", 20)
    for n in (2, 6, 20):  # beside the axes (2, 6) or below them, tick labels included (20)
        outside, styles, bands = legend_outside(runs[:n])
        assert outside and styles == n and bands == n
    assert legend_outside(runs[:6], band="none")[2] == 0
    assert legend_outside(runs[:6], band="sem", x="cycle", xlabel="cycle")[0]
    plot.main([str(tmp_path / "sweep")])
    assert magic(tmp_path / "sweep" / "accuracy.png") == PNG
    plot.main([str(tmp_path / "sweep"), "--format", "pdf", "--band", "sem", "--x", "cycle"])
    assert magic(tmp_path / "sweep" / "accuracy.pdf", 4) == PDF
    plot.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "fig.pdf"), "--band", "none"])
    assert magic(tmp_path / "fig.pdf", 4) == PDF and (tmp_path / "summary.md").is_file()
    with pytest.raises(UserError, match="disagree"):
        plot.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "fig.png"), "--format", "pdf"])
    assert plot.line_style(0) != plot.line_style(10) != plot.line_style(4)


def test_sem_band_is_std_over_sqrt_trials(tmp_path):
    run = write_deepal_run(tmp_path / "run", "EntropySampling", [[50, 60], [54, 60], [52, 66], [50, 62]])
    xs, mean, std, counts = plot.curve(plot.load_groups([run])[0].rows, "test_acc")
    assert counts == [4, 4] and std.tolist() == pytest.approx([1.6583, 2.4495], abs=1e-4)
    groups = plot.load_groups([run])
    fig = plot.draw([("x", groups[0].rows, 0)], "test_acc", "acc", band="sem")
    [band] = fig.axes[0].collections
    low = band.get_paths()[0].vertices[:, 1].min()
    assert low == pytest.approx(mean.min() - std[0] / 2, abs=1e-6)
