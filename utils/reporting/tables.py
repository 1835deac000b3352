"""The comparison table as text: markdown for the console and summary.md, CSV for summary.csv and
penalty_matrix.csv (utils/reporting/summary.py computes what they show)."""

import csv
import io
import math
from collections.abc import Sequence

import numpy as np

from utils.reporting.summary import (
    MIN_CI_TRIALS,
    REFERENCE,
    STD_NOTE,
    STOP_THRESHOLD,
    STOP_WINDOWS,
    TOO_FEW,
    Paired,
    Summary,
)


def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _interval(ci: tuple[float, float] | None, trials: int, sign: str = "") -> str:
    if ci is None:
        return f"{TOO_FEW} ({trials})"
    return f"[{ci[0]:{sign}.2f}, {ci[1]:{sign}.2f}]"


def _p(value: float | None) -> str:
    return "—" if value is None else "<0.001" if value < 0.001 else f"{value:.3f}"


def _versus(paired: Paired | None) -> str:
    if paired is None:
        return "—"
    return (f"{paired.diff:+.2f} {_interval(paired.ci, paired.trials, '+')} ({paired.wins}/{paired.trials}), "
            f"p {_p(paired.p_value)}")


def _stops(stops: tuple[float, int] | None, trials: int) -> str:
    if stops is None:
        return "—"
    return f"{stops[0]:.0f} ({stops[1]}/{trials})" if stops[1] else f"never (0/{trials})"


def to_markdown(table: Sequence[Summary], reference: str = REFERENCE) -> str:
    """A pipe table and a footer naming the AUBC, the std and interval conventions and the paired column."""
    recall = any(s.recall_aubc_mean is not None for s in table)
    classes = any(not math.isnan(s.balanced_aubc[0]) for s in table)
    beaten = any(s.times_beaten is not None for s in table)
    stops = any(s.stops is not None for s in table)
    header = ["run", "trials", "AUBC", "AUBC 95 % CI", "final acc", "final 95 % CI"] + \
             (["balanced AUBC", "min-class AUBC"] if classes else []) + (["recall AUBC"] if recall else []) + \
             ["query s/cycle", "train s/cycle"] + (["stops at"] if stops else []) + \
             (["times beaten"] if beaten else []) + [f"vs {reference}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for s in table:
        cells = [s.label.replace("|", "\\|"), str(s.trials), _pm(s.aubc_mean, s.aubc_std, 2),
                 _interval(s.aubc_ci, s.trials), _pm(s.final_mean, s.final_std, 2), _interval(s.final_ci, s.trials)]
        cells += [_pm(*s.balanced_aubc, 2), _pm(*s.min_class_aubc, 2)] if classes else []
        cells += [_pm(s.recall_aubc_mean, s.recall_aubc_std, 3)] if recall else []
        cells += [_seconds(s.query_seconds), _seconds(s.train_seconds)]
        cells += [_stops(s.stops, s.trials)] if stops else []
        cells += ["—" if s.times_beaten is None else f"{s.times_beaten:.2f}"] if beaten else []
        cells += [_versus(s.vs_reference)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["AUBC: area under test accuracy (%) against labeled-set size divided by the label range"
             + (" (balanced / min-class AUBC: the same for the mean and the lowest per-class test accuracy)"
                if classes else "") + (" (recall AUBC: the same for selection recall)" if recall else ""),
             "final acc: test accuracy (%) at each trial's last cycle", STD_NOTE,
             f"95 % CI: percentile bootstrap interval of the mean over trials ({TOO_FEW}: fewer than {MIN_CI_TRIALS})"]
    if stops:
        notes.append(f"stops at: mean labeled-set size where the stabilising-predictions rule fired (mean kappa of the "
                     f"last {STOP_WINDOWS} consecutive-model agreements on the stop set >= {STOP_THRESHOLD}), with "
                     "the trials it fired in")
    if beaten:
        notes.append("times beaten: column sum of the penalty matrix (penalty_matrix.csv)")
    notes.append(f"vs {reference}: mean paired AUBC difference against {reference} over the trials both ran (same "
                 "seed and trial), its 95 % CI, the trials won, and the two-sided paired t-test's p-value.")
    lines += ["", "; ".join(notes)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["run", "trials", "aubc_mean", "aubc_std", "aubc_ci_low", "aubc_ci_high", "final_mean", "final_std",
               "final_ci_low", "final_ci_high", "balanced_aubc_mean", "balanced_aubc_std", "min_class_aubc_mean",
               "min_class_aubc_std", "recall_aubc_mean", "recall_aubc_std", "query_seconds", "train_seconds",
               "stop_n_labeled", "stop_trials", "times_beaten", "reference", "diff_aubc", "diff_aubc_ci_low",
               "diff_aubc_ci_high", "diff_final", "diff_final_ci_low", "diff_final_ci_high", "wins", "paired_trials",
               "p_value"]


def _plain(value) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(value, 4) if isinstance(value, float) else value


def _bounds(ci: tuple[float, float] | None, trials: int) -> list:
    return [f"{TOO_FEW} ({trials})"] * 2 if ci is None else list(ci)


def to_csv(table: Sequence[Summary], reference: str = REFERENCE) -> str:
    """The table with plain numbers in separate columns (CSV_COLUMNS; std with ddof=0; empty: none;
    an interval over too few trials says so in words)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in table:
        paired = s.vs_reference
        versus = [None] * 10 if paired is None else [
            reference, paired.diff, *_bounds(paired.ci, paired.trials), paired.final_diff,
            *_bounds(paired.final_ci, paired.trials), paired.wins, paired.trials, paired.p_value]
        stops = [None, None] if s.stops is None else list(s.stops)
        writer.writerow([_plain(v) for v in (
            s.label, s.trials, s.aubc_mean, s.aubc_std, *_bounds(s.aubc_ci, s.trials), s.final_mean, s.final_std,
            *_bounds(s.final_ci, s.trials), *s.balanced_aubc, *s.min_class_aubc, s.recall_aubc_mean,
            s.recall_aubc_std, s.query_seconds, s.train_seconds, *stops, s.times_beaten, *versus)])
    return text.getvalue()


def penalty_csv(matrix: np.ndarray, labels: Sequence[str]) -> str:
    """The penalty matrix as CSV: a row per winner, a column per loser, the last row the column sums."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["beats \\ beaten", *labels])
    for label, row in zip(labels, matrix):
        writer.writerow([label, *(round(float(v), 4) for v in row)])
    writer.writerow(["times beaten", *(round(float(v), 4) for v in matrix.sum(axis=0))])
    return text.getvalue()
