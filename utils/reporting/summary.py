"""Summaries of results folders (README, 'The results folder'): area under the budget curve (AUBC),
final accuracy, seconds per cycle, the paired difference against a reference strategy (RandomSampling
by default), bootstrap confidence intervals and paired t-tests over trials, the pairwise penalty
matrix (Ash et al., ICLR'20, sec. 5), the stopping point of the stabilising-predictions rule
(Bloodgood & Vijay-Shanker, 2009), labels built from the settings that differ between runs, and the
table across runs as Markdown and CSV.

Pure computations on what a run folder holds (its config.json as a dict, its cycles.csv rows as
dicts); reading and writing files is plot.py's. Every "± std" is the standard deviation over trials
with ddof=0 (the population standard deviation, as the plots' bands), so one trial has std 0.
"""

from __future__ import annotations

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
REFERENCE = "RandomSampling"  # the default strategy every other one is compared with (plot.py --reference)
RESAMPLES = 10_000  # bootstrap resamples (plot.py --bootstrap)
CI_LEVEL = 0.95
MIN_CI_TRIALS = 3  # fewer trials: no bootstrap interval (two values give a resampled mean of 3 values only)
MIN_TEST_TRIALS = 2  # fewer paired trials: no t-test
ALPHA = 0.05  # the penalty matrix's two-sided significance level (Ash et al., 2020)
STOP_THRESHOLD, STOP_WINDOWS = 0.99, 3  # stabilising predictions: mean kappa of the last 3 windows >= 0.99
TOO_FEW = "too few trials"


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


def bootstrap_ci(values: Iterable[float], resamples: int = RESAMPLES, seed: int = 0,
                 level: float = CI_LEVEL) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (Efron & Tibshirani, 1993, ch. 13):
    the (1 - level)/2 and (1 + level)/2 quantiles of the means of ``resamples`` resamples with
    replacement, drawn from numpy's generator seeded with ``seed``. None with fewer than
    MIN_CI_TRIALS finite values. Constant values give the point (v, v)."""
    v = np.array([x for x in values if _number(x)], dtype=float)
    if v.size < MIN_CI_TRIALS:
        return None
    draws = np.random.default_rng(seed).integers(0, v.size, size=(resamples, v.size))
    means = v[draws].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_t_pvalue(diffs: np.ndarray) -> np.ndarray:
    """Two-sided p-value of the paired t-test (Student's t with n - 1 degrees of freedom on the
    differences of paired values, t = mean / (sd / sqrt(n)), sd with ddof=1) along the last axis of
    ``diffs``; NaN where n < MIN_TEST_TRIALS. Constant differences: p 1 when they are 0, else 0
    (scipy's ttest_rel gives NaN and 0 there)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n < MIN_TEST_TRIALS:
        return np.full(d.shape[:-1], math.nan)
    mean, sd = d.mean(axis=-1), d.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / math.sqrt(n)), np.where(mean == 0, 0.0, np.inf))
    return 2 * stats.t.sf(np.abs(t), n - 1)


def stop_point(rows: Sequence[dict], threshold: float = STOP_THRESHOLD, windows: int = STOP_WINDOWS) -> dict | None:
    """The first row (of one trial, by cycle) where the stabilising-predictions rule fires: the mean of
    the last ``windows`` stop_kappa values (agreement of consecutive models on the stop set) reaches
    ``threshold`` (Bloodgood & Vijay-Shanker, 2009: 3 windows, 0.99); None when it never does."""
    kappas = []
    for row in sorted(rows, key=lambda r: r.get("cycle", 0)):
        if not _number(row.get("stop_kappa")):
            continue
        kappas.append(float(row["stop_kappa"]))
        if len(kappas) >= windows and np.mean(kappas[-windows:]) >= threshold:
            return row
    return None


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
    """Paired AUBC difference against the reference strategy over the trials both runs have."""

    diff: float  # mean over common trials of (AUBC - the reference's AUBC), on the cycles both have
    wins: int  # common trials where the run's AUBC is strictly greater
    trials: int  # common trials
    ci: tuple[float, float] | None = None  # bootstrap 95 % interval of diff; None: too few trials
    p_value: float | None = None  # two-sided paired t-test; None: too few trials
    final_diff: float | None = None  # mean paired difference of the final accuracy (trials' common last cycle)
    final_ci: tuple[float, float] | None = None


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
    vs_reference: Paired | None = None
    aubc_ci: tuple[float, float] | None = None  # bootstrap 95 % interval of the mean; None: too few trials
    final_ci: tuple[float, float] | None = None
    balanced_aubc: tuple[float, float] = (math.nan, math.nan)  # (mean, std) of the balanced-accuracy AUBC
    min_class_aubc: tuple[float, float] = (math.nan, math.nan)  # (mean, std) of the worst class's AUBC
    times_beaten: float | None = None  # column sum of the penalty matrix; None: no matrix
    stops: tuple[float, int] | None = None  # (mean n_labeled where the stopping rule fired, trials it fired in)
    group: int = -1  # the group's position in summary_table's input


def summarize(group: Group, label: str, resamples: int = RESAMPLES, seed: int = 0) -> Summary:
    """Trials, AUBC and final accuracy (mean ± std over trials, bootstrap intervals of the means),
    the AUBCs of balanced and worst-class accuracy, recall AUBC for open-set runs, mean train and
    query seconds per cycle, and where the stopping rule fired."""
    rows = group.rows
    aubcs = trial_aubc(group)
    final = trial_final(group)
    recall = mean_std(trial_aubc(group, "recall").values()) if is_open_set(rows) else (None, None)
    stops = [stop_point(trial) for trial in group.trials().values()] if any("stop_kappa" in r for r in rows) else []
    fired = [float(row["n_labeled"]) for row in stops if row is not None]
    return Summary(label, len(group.trials()), *mean_std(aubcs.values()), *mean_std(final.values()), *recall,
                   _mean_column(rows, "query_seconds"), _mean_column(rows, "train_seconds"),
                   aubc_ci=bootstrap_ci(aubcs.values(), resamples, seed),
                   final_ci=bootstrap_ci(final.values(), resamples, seed),
                   balanced_aubc=mean_std(trial_aubc(group, "balanced_acc").values()),
                   min_class_aubc=mean_std(trial_aubc(group, "min_class_acc").values()),
                   stops=(float(np.mean(fired)), len(fired)) if fired else (math.nan, 0) if stops else None)


def _common_cycles(mine: Sequence[dict], theirs: Sequence[dict], metric: str) -> tuple[list[dict], list[dict]]:
    a = {r["cycle"]: r for r in mine if _number(r.get(metric))}
    b = {r["cycle"]: r for r in theirs if _number(r.get(metric))}
    cycles = sorted(set(a) & set(b))
    return [a[c] for c in cycles], [b[c] for c in cycles]


def paired_difference(group: Group, reference: Group, metric: str = "test_acc", resamples: int = RESAMPLES,
                      seed: int = 0) -> Paired | None:
    """Mean over the trials both groups have (same seed and trial) of the AUBC difference, each
    trial's AUBC over the cycles both have, with its bootstrap interval and the paired t-test's
    p-value; the same difference of the accuracy at the last common cycle. None without a common
    trial."""
    mine, theirs = group.trials(), reference.trials()
    diffs, finals = [], []
    for key in [k for k in mine if k in theirs]:
        a, b = _common_cycles(mine[key], theirs[key], metric)
        if a:
            diffs.append(aubc(*_curve(a, metric)) - aubc(*_curve(b, metric)))
            finals.append(float(a[-1][metric]) - float(b[-1][metric]))
    if not diffs:
        return None
    p = float(paired_t_pvalue(np.array(diffs)))
    return Paired(float(np.mean(diffs)), sum(d > 0 for d in diffs), len(diffs), bootstrap_ci(diffs, resamples, seed),
                  None if math.isnan(p) else p, float(np.mean(finals)), bootstrap_ci(finals, resamples, seed))


def is_strategy(run: RunRecord, name: str) -> bool:
    """Whether the run's strategy is ``name`` (case ignored; any random-sampling name stands for
    every other one), by derived.strategy_name or the strategy setting."""
    if name.lower() in RANDOM_NAMES:
        return is_random(run)
    key = strategy_key(run)
    names = {run.config.get("derived", {}).get("strategy_name"), run.settings.get(key) if key else None}
    return any(str(n).lower() == name.lower() for n in names if n is not None)


def reference_partners(groups: Sequence[Group], reference: str = REFERENCE) -> dict[int, int]:
    """{group index: index of its reference group}: groups whose first runs share the script and
    every setting but the strategy (SEED and resumable keys aside), the partner's strategy ``reference``."""
    partners = {}
    for i, group in enumerate(groups):
        run = group.first
        if not run.config or is_strategy(run, reference):
            continue
        for j, other in enumerate(groups):
            if j == i or not other.first.config or not is_strategy(other.first, reference):
                continue
            key = strategy_key(run)
            if key is None or key != strategy_key(other.first):
                continue
            drop = _ignored([run, other.first]) | {key}
            if _settings_key(run, drop) == _settings_key(other.first, drop):
                partners[i] = j
                break
    return partners


def penalty_matrix(groups: Sequence[Group], metric: str = "test_acc", alpha: float = ALPHA) -> np.ndarray:
    """The pairwise penalty matrix of Ash et al. (ICLR'20, sec. 5) over the groups: entry (i, j) sums
    1/L over the labeled-set sizes where group i beats group j, L the number of sizes both reached
    (n_labeled values both groups have); i beats j at a size when the two-sided paired t-test over
    their common trials (same seed and trial) holding that size gives p < ``alpha`` and i's mean is
    higher. Sizes with fewer than 2 paired trials count in L but are never a win. Column sums:
    how often each group was beaten."""
    curves = []
    for group in groups:
        curves.append({key: {r["n_labeled"]: float(r[metric]) for r in rows if _number(r.get(metric))}
                       for key, rows in group.trials().items()})
    n = len(groups)
    matrix = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            keys = [k for k in curves[i] if k in curves[j]]
            sizes = sorted({s for k in keys for s in curves[i][k]} & {s for k in keys for s in curves[j][k]})
            for size in sizes:
                pairs = np.array([(curves[i][k][size], curves[j][k][size]) for k in keys
                                  if size in curves[i][k] and size in curves[j][k]])
                if len(pairs) < MIN_TEST_TRIALS:
                    continue
                diff = pairs[:, 0] - pairs[:, 1]
                if paired_t_pvalue(diff) < alpha:
                    winner, loser = (i, j) if diff.mean() > 0 else (j, i)
                    matrix[winner, loser] += 1.0 / len(sizes)
    return matrix


def summary_table(groups: Sequence[Group], labels: Sequence[str], reference: str = REFERENCE,
                  resamples: int = RESAMPLES, seed: int = 0, penalty: np.ndarray | None = None) -> list[Summary]:
    """A Summary per group (with its paired difference against the ``reference`` strategy where
    there is a partner, and its column sum of ``penalty``, the penalty matrix of ``groups``),
    sorted by AUBC, highest first."""
    rows = [summarize(group, label, resamples, seed) for group, label in zip(groups, labels)]
    for i, row in enumerate(rows):
        row.group = i
    for i, j in reference_partners(groups, reference).items():
        rows[i].vs_reference = paired_difference(groups[i], groups[j], resamples=resamples, seed=seed)
    if penalty is not None:
        for row, beaten in zip(rows, penalty.sum(axis=0)):
            row.times_beaten = float(beaten)
    return sorted(rows, key=lambda s: math.inf if math.isnan(s.aubc_mean) else -s.aubc_mean)
