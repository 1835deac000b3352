"""Summaries of results folders (README, 'The results folder'): area under the budget curve (AUBC),
final accuracy, seconds per cycle, the paired difference against RandomSampling, labels built from
the settings that differ between runs, and the table across runs as Markdown and CSV.

Pure computations on what a run folder holds (its config.json as a dict, its cycles.csv rows as
dicts); reading and writing files is plot.py's. Every "± std" is the standard deviation over trials
with ddof=0 (the population standard deviation, as the plots' bands), so one trial has std 0.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

SEED_KEYS = ("SEED",)  # runs that differ only here (and in resumable settings such as CYCLES) are pooled
# Results folders written before config.json recorded "strategy_key" (the settings tree names it): the
# key each script's tree had then; for other scripts, the first of these present. Only those old folders read it.
OLD_STRATEGY_KEYS = {"main_al.py --protocol deepal": "STRATEGY", "main_al.py --protocol rethinking": "AL_METHOD",
                     "AL_center.py": "QUERY_STRATEGY", "AL_center_temperature.py": "QUERY_STRATEGY",
                     "main_TOD.py": "SAMPLING", "main_LL4AL.py": "SAMPLING"}
RANDOM_NAMES = {"random", "randomsampling"}  # strategy values (lower case) meaning random sampling
STD_NOTE = "± is the standard deviation over trials (ddof=0)"


# --------------------------------------------------------------------------- curves
def aubc(n_labeled: Sequence[float], values: Sequence[float]) -> float:
    """Area under ``values`` against labeled-set size (trapezoidal, points sorted by size), divided
    by the label range max - min: the curve's mean height, in the unit of ``values``. One point (or
    a zero range) gives the mean of the values; no point gives NaN."""
    x = np.asarray(n_labeled, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = x[-1] - x[0]
    if span <= 0:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / span)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, std with ddof=0) of the finite values; (nan, nan) when there is none."""
    v = np.array([x for x in values if _number(x)], dtype=float)
    return (float(v.mean()), float(v.std())) if v.size else (math.nan, math.nan)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_open_set(rows: Sequence[dict]) -> bool:
    """Whether the rows carry the open-set query columns (recall, precision)."""
    return bool(rows) and "recall" in rows[0]


# --------------------------------------------------------------------------- runs and groups
@dataclass
class RunRecord:
    """One results folder: its path, config.json (``{}`` when missing) and cycles.csv rows."""

    path: str
    config: dict
    rows: list[dict]

    @property
    def script(self) -> str:
        return str(self.config.get("script", ""))

    @property
    def settings(self) -> dict:
        return dict(self.config.get("settings", {}))

    @property
    def resumable(self) -> set[str]:
        return set(self.config.get("resumable", []))


@dataclass
class Group:
    """Runs identical but for their seed (one line, one table row); trials of every run count."""

    runs: list[RunRecord] = field(default_factory=list)

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    @property
    def rows(self) -> list[dict]:
        return [row for run in self.runs for row in run.rows]

    def trials(self) -> dict[tuple, list[dict]]:
        """{(seed, trial, copy): rows sorted by cycle}; ``copy`` tells apart runs with the same seed."""
        out: dict[tuple, list[dict]] = {}
        seen: dict = {}
        for run in self.runs:
            seed = run.settings.get("SEED")
            copy = seen.get(seed, 0)
            seen[seed] = copy + 1
            for row in run.rows:
                out.setdefault((seed, row.get("trial"), copy), []).append(row)
        return {key: sorted(rows, key=lambda r: r.get("cycle", 0)) for key, rows in out.items()}


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _ignored(runs: Iterable[RunRecord]) -> set[str]:
    ignored = set(SEED_KEYS)
    for run in runs:
        ignored |= run.resumable
    return ignored


def _settings_key(run: RunRecord, drop: set[str]) -> tuple:
    return run.script, _canonical({k: v for k, v in run.settings.items() if k not in drop})


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Runs with rows, those of one script and label identical but for SEED (and resumable settings)
    pooled, in first-seen order; a run without config.json is a group of its own."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if not run.rows:
            continue
        key = (str(run.config.get("label")), *_settings_key(run, _ignored([run]))) if run.config else ("", run.path)
        groups.setdefault(key, Group()).runs.append(run)
    return list(groups.values())


def strategy_key(run: RunRecord) -> str | None:
    """The settings key naming the run's query strategy (STRATEGY, AL_METHOD, QUERY_STRATEGY, ...): what
    config.json records (None: the script has none), else, for a folder written before it did, the old table's."""
    settings = run.settings
    if "strategy_key" in run.config:
        key = run.config["strategy_key"]
        return key if key in settings else None
    key = OLD_STRATEGY_KEYS.get(run.script)
    if key in settings:
        return key
    return next((k for k in dict.fromkeys(OLD_STRATEGY_KEYS.values()) if k in settings), None)


def strategy_name(run: RunRecord) -> str | None:
    """derived.strategy_name, else the strategy setting's value."""
    name = run.config.get("derived", {}).get("strategy_name")
    key = strategy_key(run)
    return str(name) if name else (str(run.settings[key]) if key else None)


def is_random(run: RunRecord) -> bool:
    """Whether the run queries at random (derived.strategy_name or the strategy setting)."""
    key = strategy_key(run)
    names = {run.config.get("derived", {}).get("strategy_name"), run.settings.get(key) if key else None}
    return any(str(n).lower() in RANDOM_NAMES for n in names if n is not None)


# --------------------------------------------------------------------------- labels
def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_format(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _strip_paths(texts: list[str]) -> list[str]:
    """Values that are paths: without the folder they all share, and never with an absolute folder."""
    if len(set(texts)) > 1 and all("/" in t for t in texts):
        head = os.path.commonprefix(texts)
        head = head[:head.rfind("/") + 1]  # cut at a folder boundary
        rest = [t[len(head):] for t in texts]
        if head and all(rest):
            texts = rest
    return [_hide_folder(t) for t in texts]


def _hide_folder(text: str) -> str:
    """'folder:/data/x/images' -> 'folder:…/images' (an absolute folder names a machine, not a setting)."""
    scheme, colon, path = text.partition(":") if ":/" in text else ("", "", text)
    if path.startswith("/") and os.path.dirname(path.rstrip("/")) not in ("", "/"):
        return f"{scheme}{colon}…/{os.path.basename(path.rstrip('/'))}"
    return text


def differing_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Sorted settings keys whose values are not the same in every run (SEED and resumable keys
    left out); a key some runs lack differs."""
    ignored = _ignored(runs)
    keys = sorted({k for run in runs for k in run.settings} - ignored)
    return [k for k in keys
            if len({_canonical(run.settings[k]) if k in run.settings else "<missing>" for run in runs}) > 1]


def _short_paths(paths: Sequence[str]) -> list[str]:
    """Folder paths without their common parent (the last folder name when there is one path)."""
    full = [os.path.abspath(p) for p in paths]
    if len(set(full)) < 2:
        return [os.path.basename(os.path.normpath(p)) for p in paths]
    common = os.path.commonpath(full)
    return [os.path.relpath(p, common) for p in full]


def make_labels(groups: Sequence[Group]) -> list[str]:
    """One label per group from the settings that differ between the groups: the strategy name
    when only the strategy differs, else ``KEY=value, KEY=value``; config.json's "label" for a
    single group. Groups of several scripts are prefixed with the script; clashes get the folder."""
    if not groups:
        return []
    paths = _short_paths([g.first.path for g in groups])
    if len(groups) == 1:
        return [str(groups[0].first.config.get("label") or paths[0])]
    scripts = list(dict.fromkeys(g.first.script for g in groups))
    labels = [""] * len(groups)
    for script in scripts:
        members = [i for i, g in enumerate(groups) if g.first.script == script]
        runs = [groups[i].first for i in members]
        keys = differing_keys(runs) if script else []
        if len(members) == 1:
            texts = [str(runs[0].config.get("label") or paths[members[0]])]
        elif not keys:
            texts = [paths[i] for i in members]
        elif keys == [strategy_key(runs[0])]:
            texts = [strategy_name(run) or _format(run.settings.get(keys[0])) for run in runs]
        else:
            columns = [_strip_paths([_format(run.settings.get(k, "—")) for run in runs]) for k in keys]
            texts = [", ".join(f"{k}={col[j]}" for k, col in zip(keys, columns)) for j in range(len(runs))]
        prefix = f"{script.replace('.py', '')}: " if len(scripts) > 1 and script else ""
        for i, text in zip(members, texts):
            labels[i] = prefix + text
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{label} [{paths[i]}]"
    return labels


# --------------------------------------------------------------------------- per-run summary
def _curve(rows: Sequence[dict], metric: str) -> tuple[list[float], list[float]]:
    points = [(r["n_labeled"], r[metric]) for r in rows if _number(r.get(metric)) and _number(r.get("n_labeled"))]
    return [p[0] for p in points], [p[1] for p in points]


def trial_aubc(group: Group, metric: str = "test_acc") -> dict[tuple, float]:
    """{trial key: AUBC of ``metric`` against n_labeled} over the group's trials."""
    out = {}
    for key, rows in group.trials().items():
        value = aubc(*_curve(rows, metric))
        if not math.isnan(value):
            out[key] = value
    return out


def trial_final(group: Group, metric: str = "test_acc") -> dict[tuple, float]:
    """{trial key: ``metric`` at the trial's last cycle}."""
    out = {}
    for key, rows in group.trials().items():
        last = [r for r in rows if _number(r.get(metric))]
        if last:
            out[key] = float(last[-1][metric])
    return out


def _mean_column(rows: Sequence[dict], column: str) -> float:
    values = [r[column] for r in rows if _number(r.get(column))]
    return float(np.mean(values)) if values else math.nan


@dataclass
class Paired:
    """Paired AUBC difference against RandomSampling over the trials both runs have."""

    diff: float  # mean over common trials of (AUBC - random's AUBC), on the cycles both have
    wins: int  # common trials where the run's AUBC is strictly greater
    trials: int  # common trials


@dataclass
class Summary:
    """One table row: a group of runs (one line of the plot)."""

    label: str
    trials: int
    aubc_mean: float
    aubc_std: float
    final_mean: float
    final_std: float
    recall_aubc_mean: float | None  # None: not an open-set run
    recall_aubc_std: float | None
    query_seconds: float  # mean per cycle
    train_seconds: float
    vs_random: Paired | None = None


def summarize(group: Group, label: str) -> Summary:
    """Trials, AUBC and final accuracy (mean ± std over trials), recall AUBC for open-set runs,
    mean train and query seconds per cycle."""
    rows = group.rows
    aubcs = trial_aubc(group)
    final = trial_final(group)
    recall = mean_std(trial_aubc(group, "recall").values()) if is_open_set(rows) else (None, None)
    return Summary(label, len(group.trials()), *mean_std(aubcs.values()), *mean_std(final.values()), *recall,
                   _mean_column(rows, "query_seconds"), _mean_column(rows, "train_seconds"))


def paired_difference(group: Group, random: Group, metric: str = "test_acc") -> Paired | None:
    """Mean over the trials both groups have (same seed and trial) of the AUBC difference, each
    trial's AUBC over the cycles both have; None without a common trial."""
    mine, theirs = group.trials(), random.trials()
    diffs = []
    for key in [k for k in mine if k in theirs]:
        a = {r["cycle"]: r for r in mine[key] if _number(r.get(metric))}
        b = {r["cycle"]: r for r in theirs[key] if _number(r.get(metric))}
        cycles = sorted(set(a) & set(b))
        if cycles:
            diffs.append(aubc(*_curve([a[c] for c in cycles], metric)) - aubc(*_curve([b[c] for c in cycles], metric)))
    if not diffs:
        return None
    return Paired(float(np.mean(diffs)), sum(d > 0 for d in diffs), len(diffs))


def random_partners(groups: Sequence[Group]) -> dict[int, int]:
    """{group index: index of its RandomSampling group}: groups whose first runs share the script
    and every setting but the strategy (SEED and resumable keys aside), the partner random."""
    partners = {}
    for i, group in enumerate(groups):
        run = group.first
        if not run.config or is_random(run):
            continue
        for j, other in enumerate(groups):
            if j == i or not other.first.config or not is_random(other.first):
                continue
            key = strategy_key(run)
            if key is None or key != strategy_key(other.first):
                continue
            drop = _ignored([run, other.first]) | {key}
            if _settings_key(run, drop) == _settings_key(other.first, drop):
                partners[i] = j
                break
    return partners


def summary_table(groups: Sequence[Group], labels: Sequence[str]) -> list[Summary]:
    """A Summary per group (with its paired difference against random where there is a partner),
    sorted by AUBC, highest first."""
    rows = [summarize(group, label) for group, label in zip(groups, labels)]
    for i, j in random_partners(groups).items():
        rows[i].vs_random = paired_difference(groups[i], groups[j])
    return sorted(rows, key=lambda s: math.inf if math.isnan(s.aubc_mean) else -s.aubc_mean)


# --------------------------------------------------------------------------- output
def _pm(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None or math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _versus(paired: Paired | None) -> str:
    return "—" if paired is None else f"{paired.diff:+.2f} ({paired.wins}/{paired.trials})"


def to_markdown(table: Sequence[Summary]) -> str:
    """A pipe table and a footer naming the AUBC, the std convention and the paired column."""
    recall = any(s.recall_aubc_mean is not None for s in table)
    header = ["run", "trials", "AUBC", "final acc"] + (["recall AUBC"] if recall else []) + \
             ["query s/cycle", "train s/cycle", "vs random"]
    align = ["---", "---:", "---:", "---:"] + (["---:"] if recall else []) + ["---:", "---:", "---:"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for s in table:
        cells = [s.label.replace("|", "\\|"), str(s.trials), _pm(s.aubc_mean, s.aubc_std, 2),
                 _pm(s.final_mean, s.final_std, 2)]
        cells += [_pm(s.recall_aubc_mean, s.recall_aubc_std, 3)] if recall else []
        cells += [_seconds(s.query_seconds), _seconds(s.train_seconds), _versus(s.vs_random)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"AUBC: area under test accuracy (%) against labeled-set size divided by the label range"
                 f"{' (recall AUBC: the same for selection recall)' if recall else ''}; final acc: test accuracy "
                 f"(%) at each trial's last cycle; {STD_NOTE}; vs random: mean paired AUBC difference against "
                 f"RandomSampling over the trials both ran (same seed and trial), with the trials won.")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["run", "trials", "aubc_mean", "aubc_std", "final_mean", "final_std", "recall_aubc_mean",
               "recall_aubc_std", "query_seconds", "train_seconds", "vs_random_diff", "vs_random_wins",
               "vs_random_trials"]


def _plain(value) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return round(value, 4) if isinstance(value, float) else value


def to_csv(table: Sequence[Summary]) -> str:
    """The table with plain numbers in separate columns (CSV_COLUMNS; std with ddof=0; empty: none)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in table:
        paired = s.vs_random
        writer.writerow([_plain(v) for v in (
            s.label, s.trials, s.aubc_mean, s.aubc_std, s.final_mean, s.final_std, s.recall_aubc_mean,
            s.recall_aubc_std, s.query_seconds, s.train_seconds, paired and paired.diff, paired and paired.wins,
            paired and paired.trials)])
    return text.getvalue()
