"""Plot results folders: test accuracy against the number of labeled images and, for open-set runs
(LfOSA's scripts), selection recall, selection precision and accuracy per query cycle; mean and
spread (one standard deviation) over trials, one line per run. Runs that differ only in --seed
are one line (mean over the seeds, as the LfOSA seed's plot.py).

    python plot.py RUN_DIR [RUN_DIR ...] [--out FIG.png | --out DIR]
    python plot.py                      # every run under log_AL/ and under results/, figures in each

Figures: accuracy.png (accuracy against labels) and, when a run has open-set columns,
recall.png, precision.png and accuracy_per_cycle.png. ``--out FIG.png`` names the first and puts
the others next to it as FIG_recall.png, ...; ``--out DIR`` (or by default the first run's
parent folder) receives all four under their own names.
"""

import glob
import os

import numpy as np

from utils.core.cli import ArgumentParser, UserError, run_cli
from utils.core.results import read_config, read_cycles

DEFAULT_ROOTS = ("log_AL", "results")  # the LfOSA scripts' --save-dir, the other scripts' default
SEED_KEYS = {"SEED"}  # runs that differ only here (and in resumable settings such as CYCLES) are one line
PER_CYCLE = (("recall", "selection recall", "recall"), ("precision", "selection precision", "precision"),
             ("test_acc", "test accuracy (%)", "accuracy_per_cycle"))  # metric, y label, file name
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")


def find_runs(root="results"):
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "cycles.csv")))


def run_label(run_dir):
    """'main_TOD: digits auxiliary:TOD sampling:TOD' from the run's config.json."""
    try:
        config = read_config(run_dir)
    except UserError:
        return os.path.basename(os.path.normpath(run_dir))
    script = str(config.get("script", "")).split(".py")[0]
    label = config.get("label") or os.path.basename(os.path.normpath(run_dir))
    return f"{script}: {label}" if script else label


def _seedless_key(run_dir):
    """The run's label and settings without the seed (and what only names or places the run)."""
    try:
        config = read_config(run_dir)
    except UserError:
        return (run_dir,)
    ignored = SEED_KEYS | set(config.get("resumable", []))
    settings = {k: v for k, v in config.get("settings", {}).items() if k not in ignored}
    return run_label(run_dir), repr(sorted(settings.items(), key=lambda kv: kv[0]))


def group_runs(runs):
    """[(label, rows)]: the rows of runs that differ only in their seed, pooled, in first-seen order."""
    groups = {}
    for run_dir in runs:
        rows = read_cycles(run_dir)
        if rows:
            label, pooled = groups.setdefault(_seedless_key(run_dir), (run_label(run_dir), []))
            pooled.extend(rows)
    return list(groups.values())


def curve(rows, metric, x="n_labeled"):
    """(x, mean, std, trials) per cycle over the trials that reached it."""
    cycles = sorted({r["cycle"] for r in rows})
    xs, means, stds, counts = [], [], [], []
    for cycle in cycles:
        at = [r for r in rows if r["cycle"] == cycle]
        values = np.array([r[metric] for r in at], dtype=float)
        xs.append(np.mean([r[x] for r in at]))
        means.append(values.mean())
        stds.append(values.std())
        counts.append(len(at))
    return np.array(xs), np.array(means), np.array(stds), counts


def plot_metric(groups, metric, ylabel, out, x="n_labeled", xlabel="labeled images"):
    """One line per (label, rows) group: mean of ``metric`` against ``x``, one std shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in groups:
        xs, mean, std, counts = curve(rows, metric, x)
        line, = ax.plot(xs, mean, marker="o", markersize=3, label=f"{label} (n={max(counts)})")
        ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if x == "cycle":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def figure_paths(out):
    """{name: path} of the four figures for ``--out`` (a figure file or a folder)."""
    names = ["accuracy"] + [name for _, _, name in PER_CYCLE]
    if out.lower().endswith(IMAGE_SUFFIXES):
        stem, suffix = os.path.splitext(out)
        return {name: out if name == "accuracy" else f"{stem}_{name}{suffix}" for name in names}
    return {name: os.path.join(out, f"{name}.png") for name in names}


def plot_runs(runs, out):
    """Every figure for ``runs``; returns the paths written."""
    missing = [r for r in runs if not os.path.isfile(os.path.join(r, "cycles.csv"))]
    if missing:
        raise UserError(f"{missing[0]} is not a run folder (no cycles.csv)")
    groups = group_runs(runs)
    paths = figure_paths(out)
    written = [plot_metric(groups, "test_acc", "test accuracy (%)", paths["accuracy"])]
    open_set = [(label, rows) for label, rows in groups if "precision" in rows[0]]
    if open_set:
        for metric, ylabel, name in PER_CYCLE:
            written.append(plot_metric(open_set, metric, ylabel, paths[name], x="cycle", xlabel="query cycle"))
    return written


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"run folders (default: every run under {' and '.join(DEFAULT_ROOTS)})")
    parser.add_argument("--out", default=None, help="accuracy figure file (the others go next to it) or a folder "
                                                    "(default: the first run's parent folder)")
    args = parser.parse_args(argv)
    batches = [(find_runs(root), root) for root in DEFAULT_ROOTS if find_runs(root)] if not args.runs else []
    if args.runs or args.out:  # one set of figures for the given runs, or for every default run
        runs = args.runs or [run for found, _ in batches for run in found]
        batches = [(runs, args.out or os.path.dirname(os.path.abspath(runs[0])))] if runs else []
    if not batches:
        raise UserError(f"no runs to plot: pass run folders, or run an experiment first (results go to "
                        f"{' or '.join(DEFAULT_ROOTS)})")
    for runs, out in batches:
        for path in plot_runs(runs, out):
            print(path)


if __name__ == "__main__":
    run_cli(main)
