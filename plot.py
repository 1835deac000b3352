"""Plot test accuracy against the number of labeled images, mean and spread (one standard
deviation) over trials, one line per run folder.

    python plot.py RUN_DIR [RUN_DIR ...] --out FIG.png
    python plot.py                      # every run under ./results
"""

import glob
import os

import numpy as np

from utils.cli import ArgumentParser, UserError, run_cli
from utils.results import read_config, read_cycles


def find_runs(root="results"):
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "cycles.csv")))


def run_label(run_dir):
    """'main_TOD: digits auxiliary:TOD sampling:TOD' from the run's config.json."""
    try:
        config = read_config(run_dir)
    except UserError:
        return os.path.basename(os.path.normpath(run_dir))
    script = str(config.get("settings", {}).get("script", "")).removesuffix(".py")
    label = config.get("label") or os.path.basename(os.path.normpath(run_dir))
    return f"{script}: {label}" if script else label


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


def plot_metric(runs, metric, ylabel, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run_dir in runs:
        rows = read_cycles(run_dir)
        if not rows:
            continue
        xs, mean, std, counts = curve(rows, metric)
        label = f"{run_label(run_dir)} ({max(counts)} trial{'s' if max(counts) > 1 else ''})"
        line, = ax.plot(xs, mean, marker="o", markersize=3, label=label)
        ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("labeled images")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders (default: every run under ./results)")
    parser.add_argument("--out", default=None, help="figure file (default: accuracy.png in the first run's parent)")
    args = parser.parse_args(argv)
    runs = args.runs or find_runs()
    if not runs:
        raise UserError("no runs to plot: pass run folders, or run an experiment first (results go to ./results)")
    missing = [r for r in runs if not os.path.isfile(os.path.join(r, "cycles.csv"))]
    if missing:
        raise UserError(f"{missing[0]} is not a run folder (no cycles.csv)")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(runs[0])), "accuracy.png")
    print(plot_metric(runs, "test_acc", "test accuracy (%)", out))


if __name__ == "__main__":
    run_cli(main)
