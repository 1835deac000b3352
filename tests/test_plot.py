"""plot.py on hand-written results folders: accuracy against labels, and for open-set runs selection
recall, selection precision and accuracy per cycle, one line per setting (seeds pooled)."""

import json

import pytest

import plot
from utils.core.cli import UserError
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS

PNG = b"\x89PNG\r\n\x1a\n"
OPENSET_HEADER = ",".join(CYCLE_COLUMNS + OPENSET_COLUMNS) + "\n"


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
    groups = plot.group_runs(lfosa_runs(tmp_path))
    assert [(label, len(rows)) for label, rows in groups] == [("AL_center: lfosa", 4), ("AL_center: random", 1)]
    xs, mean, std, counts = plot.curve(groups[0][1], "precision", x="cycle")
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
              header=",".join(CYCLE_COLUMNS) + "\n")
    monkeypatch.chdir(tmp_path)
    plot.main([])
    assert sorted(p.name for p in (tmp_path / "log_AL").glob("*.png")) == [
        "accuracy.png", "accuracy_per_cycle.png", "precision.png", "recall.png"]
    assert sorted(p.name for p in (tmp_path / "results").glob("*.png")) == ["accuracy.png"]  # no open-set columns


def test_nothing_to_plot_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no runs to plot"):
        plot.main([])
    with pytest.raises(UserError, match="not a run folder"):
        plot.main([str(tmp_path)])
