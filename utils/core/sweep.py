"""Paired sweeps: one command, several strategies, one results folder per strategy under ``--out``.

``main_al.py --strategy A,B,C --out runs/cmp`` (or ``--strategy all``; ``--al-method`` under the
rethinking protocol) runs the same command once per strategy into ``runs/cmp/<Strategy>/``. Every
run uses the same settings and seeds, so trial t of every strategy starts from the same labeled set
and the same initial network (the protocols draw both from the trial's seed before any strategy
acts). ``--jobs N`` runs N strategies at once as separate processes (the CPU threads divided among
them; with GPUs, one device per process in turn, of those CUDA_VISIBLE_DEVICES lists when set);
``--shard I/N`` runs the I-th of N slices of the strategies, so the slices of a cluster job array write
disjoint folders of the same ``--out``. A strategy whose folder has finished its plan is skipped; an
unfinished one is resumed. On Linux the processes of ``--jobs`` end with the sweep (a parent-death
signal), so a killed sweep leaves no run holding its folder's lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from utils.core.config import FALSE, TRUE
from utils.core.errors import UserError
from utils.core.results import ResultsFolder

BOOLEANS = set(TRUE) | set(FALSE)


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (1-based) of ``count`` slices of a sweep."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if text is None:
            return cls()
        index, sep, count = str(text).partition("/")
        if not sep or not index.isdigit() or not count.isdigit() or not 1 <= int(index) <= int(count):
            raise UserError(f"--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 1/4")
        return cls(int(index), int(count))

    def take(self, names: list) -> list:
        return names[self.index - 1::self.count]


def strategy_list(text: str | None) -> list[str] | None:
    """The names of a sweep (``A,B,C``), or None for a single strategy."""
    if text is None or ("," not in text and text.lower() != "all"):
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"the strategy list {text!r} names no strategy; give A,B,C or all")
    if len(set(n.lower() for n in names)) != len(names):
        raise UserError(f"the strategy list {text!r} names a strategy twice")
    return names


def finished(folder: str, trials: int, cycles: int | None, settings: dict | None = None) -> bool:
    """Whether the run in ``folder`` has finished ``trials`` trials of ``cycles`` cycles (None:
    the plan it recorded), run with ``settings`` (the non-resumable settings; None: not checked).
    A run with other settings is not finished: resuming it then stops with the settings that
    differ, instead of the sweep skipping it."""
    results = ResultsFolder(folder)
    if not results.has_state():
        return False
    state = results.read_state()
    if settings is not None and any(state["identity"].get(k) != json.loads(json.dumps(v)) for k, v in settings.items()):
        return False
    plan = state.get("plan", {})
    planned = plan.get("cycles")
    if plan.get("trials") != trials or (cycles is not None and planned != cycles) or planned is None:
        return False
    return all(state["finished"].get(str(t), -1) == planned - 1 for t in range(trials))


def child_argv(argv: list[str], drop: dict, add: list[str]) -> list[str]:
    """``argv`` without the options in ``drop`` (option -> takes a value) and the ``--set KEY=``
    assignments of the keys ``drop["--set"]`` names, then ``add``."""
    keys = {k.upper() for k in drop.get("--set", ())}
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        option = token.split("=", 1)[0]
        if option in drop and option != "--set":
            i += 1 if "=" in token or not drop[option] else 2
            if option == "--resume" and "=" not in token and i < len(argv) and argv[i].lower() in BOOLEANS:
                i += 1  # --resume's optional value
            continue
        if option == "--set":
            value = token.split("=", 1)[1] if "=" in token else (argv[i + 1] if i + 1 < len(argv) else "")
            step = 1 if "=" in token else 2
            if value.split("=", 1)[0].strip().upper() in keys:
                i += step
                continue
        out.append(token)
        i += 1
    return out + add


PARENT_ENV = "AL_SWEEP_PARENT"  # the sweep's pid, in the environment of the processes it starts
PR_SET_DEATHSIG = 1  # prctl(2)


def end_with_parent() -> None:
    """In a process a sweep started (``AL_SWEEP_PARENT`` set): ask Linux to send it SIGTERM when the
    sweep ends (prctl PR_SET_DEATHSIG), and stop at once if the sweep has already ended. Elsewhere
    (no sweep, not Linux) nothing."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the sweep ended before the signal was asked for
        raise SystemExit(f"sweep: the sweep that started this run (pid {parent}) has ended; stopping")


def error_line(log: str, start: int = 0) -> str:
    """The line that says why a process failed, from its log ``log`` (read from byte ``start``):
    its last ``error:`` line, else its last line (a traceback's exception)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(start, os.path.getsize(log) - (1 << 16)))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1]


@dataclass
class Job:
    name: str
    folder: str
    argv: list


def run_jobs(jobs: list[Job], workers: int, script: str, run_here: Callable[[list], None], log: Callable) -> None:
    """Run every job: in this process one after the other (``workers`` 1), or as up to ``workers``
    processes of ``script`` at once, each with an equal share of the CPU threads (and, with CUDA,
    one device per process in turn, of those CUDA_VISIBLE_DEVICES lists when set); their output goes to
    ``<folder>.log``. Raises UserError naming the failed strategies."""
    if workers <= 1:
        for job in jobs:
            log(f"sweep: {job.name} -> {job.folder}")
            run_here(job.argv)
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    devices = torch.cuda.device_count()  # (the visible ones: CUDA_VISIBLE_DEVICES, when set, lists them)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [d.strip() for d in visible.split(",") if d.strip()][:devices] if visible is not None else \
        [str(i) for i in range(devices)]
    pending, running, failed = list(jobs), [], []
    slot = 0
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   PARENT_ENV: str(os.getpid())}
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            slot += 1
            os.makedirs(os.path.dirname(os.path.abspath(job.folder)), exist_ok=True)
            log_file = open(job.folder + ".log", "a")
            process = subprocess.Popen([sys.executable, script, *job.argv], env=env, stdout=log_file,
                                       stderr=subprocess.STDOUT)
            running.append((job, process, log_file, time.time(), log_file.tell()))
            log(f"sweep: {job.name} started (log {job.folder}.log)")
        time.sleep(0.2)
        for entry in list(running):
            job, process, log_file, start, offset = entry
            if process.poll() is None:
                continue
            running.remove(entry)
            log_file.close()
            if process.returncode:
                failed.append(job.name)
                log(f"sweep: {job.name} failed (exit {process.returncode}): {error_line(job.folder + '.log', offset)} "
                    f"(log {job.folder}.log)")
            else:
                log(f"sweep: {job.name} finished in {time.time() - start:.0f} s")
    if failed:
        raise UserError(f"sweep: {len(failed)} strategy run(s) failed: {', '.join(failed)}; see their .log files")
