"""Plot and summarise results folders: test accuracy against the number of labeled images and, for
open-set runs (LfOSA's scripts, main_al.py --known-classes), selection recall, selection precision
and accuracy per query cycle; mean and a band over trials, one line per run; and a table per run
(AUBC, final accuracy, seconds per cycle, paired difference against RandomSampling). Runs that
differ only in --seed are one line and one row (their trials pooled, as the LfOSA seed's plot.py).

    python plot.py PATH [PATH ...] [--out FIG.png | --out DIR] [--labels A,B,...] [--band std|sem|none]
                   [--x labels|cycle] [--format png|pdf]
    python plot.py                      # every run under log_AL/ and under results/, figures in each

A PATH is a run folder (it holds cycles.csv) or a folder searched recursively for run folders, e.g.
the --out of a main_al.py sweep. Lines are labeled with the settings that differ between them
(the strategy name when only the strategy differs); --labels names them instead, in the order of
the lines (the order of the paths, seeds pooled).

Figures: accuracy.png (accuracy against labels) and, when a run has open-set columns,
recall.png, precision.png and accuracy_per_cycle.png. ``--out FIG.png`` (or FIG.pdf) names the
first and puts the others next to it as FIG_recall.png, ...; ``--out DIR`` (by default the first
PATH when it is a folder of runs, else the first run's parent folder) receives all four under their
own names. summary.md and summary.csv go to the same folder; the Markdown table is printed.
"""

import os

import numpy as np

from utils.core import summary
from utils.core.cli import ArgumentParser, UserError, run_cli
from utils.core.results import read_config, read_cycles, write_text

DEFAULT_ROOTS = ("log_AL", "results")  # the LfOSA scripts' --save-dir, the other scripts' default
PER_CYCLE = (("recall", "selection recall", "recall"), ("precision", "selection precision", "precision"),
             ("test_acc", "test accuracy (%)", "accuracy_per_cycle"))  # metric, y label, file name
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")
FORMATS = ("png", "pdf")
# line styles: colour i % 10, dashes i % 4, marker i % 7 (every pair of the first 20 lines differs in
# colour or dashes, every one of the first 140 in the triple)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LEGEND_RIGHT_MAX = 12  # up to this many lines the legend sits right of the axes, more go below


# --------------------------------------------------------------------------- finding and reading runs
def is_run(folder):
    return os.path.isfile(os.path.join(folder, "cycles.csv"))


def find_runs(root="results"):
    """Run folders (holding cycles.csv) at or under ``root``, sorted; run folders are not searched."""
    if is_run(root):
        return [root]
    found = []
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if folder != root and is_run(folder):
            found.append(folder)
            subfolders[:] = []
    return sorted(found)


def resolve_paths(paths):
    """The run folders of ``paths`` (run folders or folders of runs), in order, without repeats."""
    runs = []
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{path} does not exist")
        found = find_runs(path) if os.path.isdir(path) else []
        if not found:
            raise UserError(f"{path} is not a run folder and holds none (no cycles.csv in it or under it)")
        runs.extend(found)
    seen = set()
    return [r for r in runs if not (os.path.realpath(r) in seen or seen.add(os.path.realpath(r)))]


def load_run(path):
    try:
        config = read_config(path)
    except UserError:
        config = {}
    return summary.Run(path, config if isinstance(config, dict) else {}, read_cycles(path))


def load_groups(runs):
    """[summary.Group] of the run folders ``runs``: runs identical but for SEED pooled."""
    return summary.group_runs([load_run(r) for r in runs])


# --------------------------------------------------------------------------- figures
def curve(rows, metric, x="n_labeled"):
    """(x, mean, std, trials) per cycle over the trials that reached it (std with ddof=0)."""
    rows = [r for r in rows if isinstance(r.get(metric), (int, float))]
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


def line_style(i):
    """Colour, dashes and marker of the i-th line (deterministic)."""
    return {"color": COLORS[i % len(COLORS)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def draw(lines, metric, ylabel, x="n_labeled", xlabel="labeled images", band="std"):
    """A figure with one line per (label, rows, style index): mean of ``metric`` against ``x``, the
    band (std, sem = std / sqrt(trials), or none) shaded; the legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2) if len(lines) <= LEGEND_RIGHT_MAX else (8.0, 5.0))
    alpha = 0.2 if len(lines) <= 3 else 0.12 if len(lines) <= 8 else 0.06
    for label, rows, index in lines:
        xs, mean, std, counts = curve(rows, metric, x)
        if not len(xs):
            continue
        spread = std / np.sqrt(counts) if band == "sem" else std
        ax.plot(xs, mean, markersize=4, linewidth=1.4, markevery=max(1, len(xs) // 12),
                label=f"{label} (n={max(counts)})", **line_style(index))
        if band != "none":
            ax.fill_between(xs, mean - spread, mean + spread, color=line_style(index)["color"], alpha=alpha,
                            linewidth=0)
    if x == "cycle":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(lines) <= LEGEND_RIGHT_MAX:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    else:
        longest = max(len(label) for label, _, _ in lines)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), borderaxespad=0.0, frameon=False,
                  ncol=3 if longest <= 22 else 2 if longest <= 40 else 1)
    return fig


def save(fig, out):
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def figure_paths(out, fmt="png"):
    """{name: path} of the four figures for ``--out`` (a figure file or a folder)."""
    names = ["accuracy"] + [name for _, _, name in PER_CYCLE]
    if out.lower().endswith(IMAGE_SUFFIXES):
        stem, suffix = os.path.splitext(out)
        return {name: out if name == "accuracy" else f"{stem}_{name}{suffix}" for name in names}
    return {name: os.path.join(out, f"{name}.{fmt}") for name in names}


# --------------------------------------------------------------------------- one set of figures and tables
def prepare(runs, labels=None):
    """(groups, labels) of the run folders ``runs``; ``labels`` (a list) replaces the built ones."""
    missing = [r for r in runs if not is_run(r)]
    if missing:
        raise UserError(f"{missing[0]} is not a run folder (no cycles.csv)")
    groups = load_groups(runs)
    if not groups:
        raise UserError(f"no finished cycle to plot in {', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}")
    built = summary.make_labels(groups)
    if labels is not None and len(labels) != len(groups):
        raise UserError(f"--labels names {len(labels)} line(s), the runs make {len(groups)} (runs differing only "
                        f"in SEED are one line); in order: {'; '.join(built)}")
    return groups, list(labels) if labels is not None else built


def write_outputs(groups, labels, out, band="std", x="labels", fmt="png"):
    paths = figure_paths(out, fmt)
    lines = [(label, group.rows, i) for i, (label, group) in enumerate(zip(labels, groups))]
    by_cycle = x == "cycle"
    written = [save(draw(lines, "test_acc", "test accuracy (%)", x="cycle" if by_cycle else "n_labeled",
                         xlabel="cycle" if by_cycle else "labeled images", band=band), paths["accuracy"])]
    open_set = [line for line in lines if "precision" in line[1][0]]
    if open_set:
        for metric, ylabel, name in PER_CYCLE:
            written.append(save(draw(open_set, metric, ylabel, x="cycle", xlabel="query cycle", band=band),
                                paths[name]))
    table = summary.summary_table(groups, labels)
    markdown = summary.to_markdown(table)
    folder = out if not out.lower().endswith(IMAGE_SUFFIXES) else os.path.dirname(os.path.abspath(out))
    for name, text in (("summary.md", markdown), ("summary.csv", summary.to_csv(table))):
        path = os.path.join(folder, name)
        write_text(path, text)
        written.append(path)
    return written, markdown


def main(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="PATH",
                        help=f"run folders or folders of runs (default: every run under {' and '.join(DEFAULT_ROOTS)})")
    parser.add_argument("--out", default=None, help="accuracy figure file (the others go next to it) or a folder "
                                                    "(default: the first PATH if it is a folder of runs, else the "
                                                    "first run's parent folder)")
    parser.add_argument("--labels", default=None, help="comma-separated line labels, in the order of the lines")
    parser.add_argument("--band", choices=("std", "sem", "none"), default="std",
                        help="shaded band: one standard deviation over trials (default), the standard error "
                             "std/sqrt(trials), or none")
    parser.add_argument("--x", choices=("labels", "cycle"), default="labels",
                        help="x axis of the accuracy figure: labeled-set size (default) or cycle number")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="figure format (default: --out FIG's suffix, else png)")
    args = parser.parse_args(argv)
    fmt = args.format or "png"
    if args.out and args.out.lower().endswith(IMAGE_SUFFIXES):
        suffix = os.path.splitext(args.out)[1].lower().lstrip(".")
        if args.format and suffix != args.format:
            raise UserError(f"--out {args.out} and --format {args.format} disagree")
        fmt = suffix
    labels = [name.strip() for name in args.labels.split(",")] if args.labels is not None else None

    if args.runs:
        runs = resolve_paths(args.runs)
        first = args.runs[0]
        default_out = first if os.path.isdir(first) and not is_run(first) else os.path.dirname(os.path.abspath(runs[0]))
        batches = [(runs, args.out or default_out)]
    else:
        found = [(find_runs(root), root) for root in DEFAULT_ROOTS if os.path.isdir(root)]
        found = [(runs, root) for runs, root in found if runs]
        batches = [([r for runs, _ in found for r in runs], args.out)] if args.out and found else found
    if not batches:
        raise UserError(f"no runs to plot: pass run folders, or run an experiment first (results go to "
                        f"{' or '.join(DEFAULT_ROOTS)})")
    prepared = [(prepare(runs, labels), out) for runs, out in batches]  # every check before anything is written
    for (groups, names), out in prepared:
        written, markdown = write_outputs(groups, names, out, args.band, args.x, fmt)
        print(markdown)
        for path in written:
            print(path)


if __name__ == "__main__":
    run_cli(main)
