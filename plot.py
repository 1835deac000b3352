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
recall.png, precision.png and accuracy_per_cycle.png; penalty_matrix.png with two runs or more.
``--out FIG.png`` (or FIG.pdf) names the first and puts the others next to it as FIG_recall.png,
...; ``--out DIR`` (by default the first PATH when it is a folder of runs, else the first run's
parent folder) receives them under their own names. summary.md, summary.csv and penalty_matrix.csv
go to the same folder; the Markdown table is printed.

A run whose cycles.csv or config.json is damaged, or that has no finished cycle yet, is skipped with
a warning line; when no run is left, or --out cannot receive the files, plot.py stops with one line
(exit code 2) before anything is written.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import numpy as np

from utils.core.cli import ArgumentParser, run_cli
from utils.core.cli import path as path_arg
from utils.core.errors import UserError
from utils.core.results import check_folder, read_config, read_cycles, write_text
from utils.reporting import summary, tables

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DESCRIPTION = ("Draw, from the cycles.csv of results folders, test accuracy against the number of labeled images "
               "and, for open-set runs, selection recall, selection precision and accuracy per query cycle: mean "
               "and a band over trials, one line per run (runs differing only in their seed pooled). Also writes "
               "summary.md and summary.csv (AUBC, final accuracy, 95 % bootstrap intervals, seconds per cycle, paired "
               "difference against a reference strategy with a t-test) and the pairwise penalty matrix next to the "
               "figures and prints the table.")

DEFAULT_ROOTS = ("log_AL", "results")  # the LfOSA scripts' --save-dir, the other scripts' default
PER_CYCLE = (("recall", "selection recall", "recall"), ("precision", "selection precision", "precision"),
             ("test_acc", "test accuracy (%)", "accuracy_per_cycle"))  # metric, y label, file name
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg")
FORMATS = ("png", "pdf")
SUMMARY_FILES = ("summary.md", "summary.csv", "penalty_matrix.csv")
# line styles: colour i % 10, dashes i % 4, marker i % 7 (every pair of the first 20 lines differs in
# colour or dashes, every one of the first 140 in the triple)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LEGEND_RIGHT_MAX = 12  # up to this many lines the legend sits right of the axes, more go below


# --------------------------------------------------------------------------- finding and reading runs
def is_run(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "cycles.csv"))


def find_runs(root: str = "results") -> list[str]:
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


def resolve_paths(paths: list[str]) -> list[str]:
    """The run folders of ``paths`` (run folders or folders of runs), in order, without repeats."""
    runs = []
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{path} does not exist; pass a run folder (one holding cycles.csv) or a folder of runs")
        found = find_runs(path) if os.path.isdir(path) else []
        if not found:
            raise UserError(f"{path} is not a run folder and holds none (no cycles.csv in it or under it); pass a "
                            "run folder or a folder of runs")
        runs.extend(found)
    seen = set()
    return [r for r in runs if not (os.path.realpath(r) in seen or seen.add(os.path.realpath(r)))]


def load_run(folder: str) -> summary.RunRecord:
    """The run in ``folder``: its config.json (``{}`` when it has none) and cycles.csv. UserError
    when either is damaged or no finished cycle holds a test accuracy."""
    config_file, cycles_file = os.path.join(folder, "config.json"), os.path.join(folder, "cycles.csv")
    config = read_config(folder) if os.path.exists(config_file) else {}
    if not isinstance(config, dict):
        raise UserError(f"config file {config_file} is not a JSON object")
    rows = read_cycles(folder)
    if not rows:
        raise UserError(f"{cycles_file} has no finished cycle yet")
    if not any(isinstance(row.get("test_acc"), (int, float)) for row in rows):
        raise UserError(f"{cycles_file} has no test_acc value")
    return summary.RunRecord(folder, config, rows)


def load_groups(runs: list[str], skipped: list | None = None) -> list[summary.Group]:
    """[summary.Group] of the run folders ``runs``: runs identical but for SEED pooled. An unreadable
    run is a UserError or, given the list ``skipped``, left out and appended to it as (run, reason)."""
    loaded = []
    for run in runs:
        try:
            loaded.append(load_run(run))
        except UserError as exc:
            if skipped is None:
                raise
            skipped.append((run, str(exc)))
    return summary.group_runs(loaded)


# --------------------------------------------------------------------------- figures
def curve(rows: list[dict], metric: str, x: str = "n_labeled"
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
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


def line_style(i: int) -> dict:
    """Colour, dashes and marker of the i-th line (deterministic)."""
    return {"color": COLORS[i % len(COLORS)], "linestyle": LINESTYLES[i % len(LINESTYLES)],
            "marker": MARKERS[i % len(MARKERS)]}


def draw(lines: list[tuple[str, list[dict], int]], metric: str, ylabel: str, x: str = "n_labeled",
         xlabel: str = "labeled images", band: str = "std") -> Figure:
    """A figure with one line per (label, rows, style index): mean of ``metric`` against ``x``, the
    band (std, sem = std / sqrt(trials), or none) shaded; the legend outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2) if len(lines) <= LEGEND_RIGHT_MAX else (8.0, 5.0))
    stopped = False
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
        stop = stop_x(rows, x) if metric == "test_acc" else None
        if stop is not None:
            ax.plot([stop], [np.interp(stop, xs, mean)], marker="*", markersize=11, color=line_style(index)["color"],
                    markeredgecolor="black", markeredgewidth=0.6, linestyle="none", zorder=5)
            stopped = True
    if x == "cycle":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if stopped:
        ax.plot([], [], marker="*", markersize=9, color="white", markeredgecolor="black", linestyle="none",
                label=f"stop (kappa >= {summary.STOP_THRESHOLD}, {summary.STOP_WINDOWS} windows)")
    if len(lines) <= LEGEND_RIGHT_MAX:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    else:
        longest = max(len(label) for label, _, _ in lines)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), borderaxespad=0.0, frameon=False,
                  ncol=3 if longest <= 22 else 2 if longest <= 40 else 1)
    return fig


def stop_x(rows: list[dict], x: str = "n_labeled") -> float | None:
    """Mean ``x`` (labeled-set size or cycle) over the trials where the stabilising-predictions rule
    fired (summary.stop_point); None when the rows have no stop_kappa or it fired in no trial."""
    if not any("stop_kappa" in r for r in rows):
        return None
    trials: dict = {}
    for row in rows:
        trials.setdefault(row.get("trial"), []).append(row)
    points = [summary.stop_point(trial) for trial in trials.values()]
    points = [float(p[x]) for p in points if p is not None]
    return float(np.mean(points)) if points else None


def draw_penalty(matrix: np.ndarray, labels: list[str]) -> Figure:
    """The penalty matrix as a heat map (row beats column; darker: more often), each cell's value
    written in it, and its column sums ("times beaten") in a row below; sized for 30 strategies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    side = max(4.0, 0.32 * n + 2.5)
    fig, (ax, bottom) = plt.subplots(2, 1, figsize=(side + 1.2, side + 0.6), sharex=True,
                                     gridspec_kw={"height_ratios": [n, 1.2], "hspace": 0.04})
    image = ax.imshow(matrix, cmap="Reds", vmin=0, vmax=max(1.0, float(matrix.max())), aspect="auto")
    sums = matrix.sum(axis=0)[None, :]
    bottom.imshow(sums, cmap="Greys", vmin=0, vmax=max(1.0, float(sums.max())) * 1.6, aspect="auto")
    size = 7 if n <= 12 else 5.5 if n <= 24 else 5
    for (i, j), value in np.ndenumerate(matrix):
        if i != j and value > 0:
            ax.text(j, i, f"{value:.2f}".lstrip("0"), ha="center", va="center", fontsize=size,
                    color="white" if value > 0.6 * max(1.0, float(matrix.max())) else "black")
    for j, value in enumerate(sums[0]):
        bottom.text(j, 0, f"{value:.1f}", ha="center", va="center", fontsize=size)
    for i in range(n):
        ax.add_patch(matplotlib.patches.Rectangle((i - 0.5, i - 0.5), 1, 1, color="0.85"))
    ax.set_yticks(range(n), labels, fontsize=7 if n <= 24 else 6)
    ax.set_ylabel("row beats column (significantly, p < 0.05)")
    bottom.set_yticks([0], ["times beaten"], fontsize=7)
    bottom.set_xticks(range(n), labels, rotation=90, fontsize=7 if n <= 24 else 6)
    ax.tick_params(labelbottom=False)
    fig.colorbar(image, ax=[ax, bottom], fraction=0.03, pad=0.01, label="share of labeled-set sizes")
    return fig


def save(fig: Figure, out: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def is_figure_file(out: str) -> bool:
    """Whether ``--out`` names the accuracy figure (FIG.png, ...) rather than a folder."""
    return out.lower().endswith(IMAGE_SUFFIXES)


def output_folder(out: str) -> str:
    """The folder ``--out`` puts the figures and tables in."""
    return (os.path.dirname(out) or os.curdir) if is_figure_file(out) else out


def figure_paths(out: str, fmt: str = "png") -> dict[str, str]:
    """{name: path} of the four figures for ``--out`` (a figure file or a folder)."""
    names = ["accuracy", "penalty_matrix"] + [name for _, _, name in PER_CYCLE]
    if is_figure_file(out):
        stem, suffix = os.path.splitext(out)
        return {name: out if name == "accuracy" else f"{stem}_{name}{suffix}" for name in names}
    return {name: os.path.join(out, f"{name}.{fmt}") for name in names}


def check_out(out: str, fmt: str = "png") -> None:
    """UserError unless ``--out`` can receive the figures and tables: its folder is not a file, not
    under one and writable, and none of the paths to write exists as something else than a file."""
    folder = output_folder(out)
    check_folder(folder, "--out")
    for path in [*figure_paths(out, fmt).values(), *(os.path.join(folder, name) for name in SUMMARY_FILES)]:
        if os.path.exists(path) and not os.path.isfile(path):
            raise UserError(f"--out {out}: {path} exists and is not a file; choose another --out")


# --------------------------------------------------------------------------- one set of figures and tables
def prepare(runs: list[str], where: str, labels: list[str] | None = None
            ) -> tuple[list[summary.Group], list[str], list[tuple[str, str]]]:
    """(groups, labels, skipped) of the run folders ``runs`` (found in ``where``): the unreadable
    runs are left out, as (run, reason) in ``skipped``, and none readable is a UserError.
    ``labels`` (a list) replaces the built ones."""
    missing = [r for r in runs if not is_run(r)]
    if missing:
        raise UserError(f"{missing[0]} is not a run folder (no cycles.csv)")
    skipped = []
    groups = load_groups(runs, skipped)
    if not groups:
        others = len(skipped) - 1
        more = f" (and {others} more unreadable run{'s' if others > 1 else ''})" if others else ""
        raise UserError(f"nothing to plot in {where}: {skipped[0][1]}{more}; pass folders of runs this project's "
                        "scripts wrote, with a finished cycle")
    built = summary.make_labels(groups)
    if labels is not None and len(labels) != len(groups):
        raise UserError(f"--labels names {len(labels)} line(s), the runs make {len(groups)} (runs differing only "
                        f"in SEED are one line); in order: {'; '.join(built)}")
    return groups, list(labels) if labels is not None else built, skipped


def write_outputs(groups: list[summary.Group], labels: list[str], out: str, band: str = "std", x: str = "labels",
                  fmt: str = "png", reference: str = summary.REFERENCE, resamples: int = summary.RESAMPLES,
                  seed: int = 0) -> tuple[list[str], str]:
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
    penalty = summary.penalty_matrix(groups) if len(groups) > 1 else None
    table = summary.summary_table(groups, labels, reference, resamples, seed, penalty)
    markdown = tables.to_markdown(table, reference)
    texts = [markdown, tables.to_csv(table, reference)]
    if penalty is not None:  # in the table's order (by AUBC)
        order = [row.group for row in table]
        ordered = penalty[np.ix_(order, order)]
        texts.append(tables.penalty_csv(ordered, [labels[i] for i in order]))
        written.append(save(draw_penalty(ordered, [labels[i] for i in order]), paths["penalty_matrix"]))
    for name, text in zip(SUMMARY_FILES, texts):
        path = os.path.join(output_folder(out), name)
        write_text(path, text)
        written.append(path)
    return written, markdown


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=DESCRIPTION)
    parser.add_argument("runs", nargs="*", metavar="PATH", type=path_arg,
                        help="run folders (holding cycles.csv) or folders searched for them (default: every run "
                             f"under {' and under '.join(DEFAULT_ROOTS)}, each folder's figures in it)")
    parser.add_argument("--out", default=None, type=path_arg,
                        help="accuracy figure file (the others go next to it) or a folder (default: the first PATH "
                             "if it is a folder of runs, else the first run's parent folder)")
    parser.add_argument("--labels", default=None,
                        help="comma-separated line labels, in the order of the lines (default: the settings that "
                             "differ between the lines)")
    parser.add_argument("--band", choices=("std", "sem", "none"), default="std",
                        help="shaded band: std (one standard deviation over trials), sem (std/sqrt(trials)) or none "
                             "(default: std)")
    parser.add_argument("--x", choices=("labels", "cycle"), default="labels",
                        help="x axis of the accuracy figure: labels (labeled-set size) or cycle (default: labels)")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="figure format (default: --out FIG's suffix, else png)")
    parser.add_argument("--reference", default=None,
                        help="the strategy every other one is compared with, paired by seed and trial (default: "
                             f"{summary.REFERENCE}; a name given must be a plotted run's strategy)")
    parser.add_argument("--bootstrap", type=int, default=summary.RESAMPLES, metavar="N",
                        help=f"bootstrap resamples of each 95 %% interval (default: {summary.RESAMPLES})")
    parser.add_argument("--bootstrap-seed", type=int, default=0, metavar="S",
                        help="seed of the bootstrap resamples (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    fmt = args.format or "png"
    if args.out and is_figure_file(args.out):
        suffix = os.path.splitext(args.out)[1].lower().lstrip(".")
        if args.format and suffix != args.format:
            raise UserError(f"--out {args.out} and --format {args.format} disagree")
        fmt = suffix
    labels = [name.strip() for name in args.labels.split(",")] if args.labels is not None else None
    if args.bootstrap < 1 or args.bootstrap > 10**7:
        raise UserError(f"--bootstrap {args.bootstrap}: give a number of resamples in [1, 10000000]")
    if args.bootstrap_seed < 0:
        raise UserError(f"--bootstrap-seed {args.bootstrap_seed}: give a seed >= 0")

    if args.runs:  # batches of (run folders, --out, where they were found)
        runs = resolve_paths(args.runs)
        first = args.runs[0]
        default_out = first if os.path.isdir(first) and not is_run(first) else os.path.dirname(os.path.abspath(runs[0]))
        batches = [(runs, args.out or default_out, ", ".join(args.runs))]
    else:
        found = {root: find_runs(root) for root in DEFAULT_ROOTS if os.path.isdir(root)}
        found = {root: runs for root, runs in found.items() if runs}
        if args.out and found:
            batches = [([r for runs in found.values() for r in runs], args.out, " and ".join(found))]
        else:
            batches = [(runs, root, root) for root, runs in found.items()]
    if not batches:
        raise UserError(f"no runs to plot: pass run folders, or run an experiment first (results go to "
                        f"{' or '.join(DEFAULT_ROOTS)})")
    prepared = []
    for runs, out, where in batches:  # every check before anything is written
        check_out(out, fmt)
        prepared.append((*prepare(runs, where, labels), out))
    if args.reference is not None:
        groups = [g for batch in prepared for g in batch[0]]
        if not any(summary.is_strategy(g.first, args.reference) for g in groups):
            names = sorted({summary.strategy_name(g.first) or "?" for g in groups})
            raise UserError(f"--reference {args.reference}: no plotted run uses it; the runs' strategies: "
                            f"{', '.join(names)}")
    for _, _, skipped, _ in prepared:
        for run, reason in skipped:
            print(f"warning: skipping {run}: {reason}", file=sys.stderr)
    for groups, names, _, out in prepared:
        written, markdown = write_outputs(groups, names, out, args.band, args.x, fmt,
                                          args.reference or summary.REFERENCE, args.bootstrap, args.bootstrap_seed)
        print(markdown)
        for path in written:
            print(path)


if __name__ == "__main__":
    run_cli(main)
