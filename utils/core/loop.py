"""The active-learning run: results folder, per-cycle commit, resume (its reporting: utils/core/progress.py).

An entry script drives its own trial/cycle loop (the paper's algorithm) and calls

    run = start_run(args, cfg, data, dist, name_parts, label, cycles)
    for trial in range(trials):
        saved = run.restore(trial)             # None, or the checkpoint after the last finished cycle
        for cycle in range(run.first_cycle(trial), cycles):
            ...train, test, query...
            labeled_idx = run.commit(trial, cycle, labeled_idx, queried, test_acc, times, checkpoint)

``commit`` writes the cycle's labeled set, the trial checkpoint (models, every RNG state and the
cycle's row: the commit point), its row of cycles.csv and last the state file (with the checksum
of every file a resume reads), each atomically. A run killed at any point resumes from the last
committed cycle, finishing a commit the kill interrupted, and reproduces the uninterrupted run on
the CPU. ``<out>/.lock`` keeps a second run out of the folder; a folder with no finished cycle is
not a run to protect (the same command starts over in it).
"""

import json
import os
import subprocess
import sys

import numpy as np
import torch

from utils.core.config import Settings
from utils.core.distributed import barrier
from utils.core.errors import UserError
from utils.core.progress import Reporter, release, set_active
from utils.core.results import (
    CYCLE_COLUMNS,
    ResultsFolder,
    atomic_write,
    check_folder,
    file_sha256,
    read_cycles,
    write_text,
)
from utils.core.rng import rng_state, set_rng_state
from utils.core.train import EvalScores

SETTINGS_FILE = "settings.yaml"  # the run's settings, as --config-file reads them


def _versions():
    import torchvision

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "git_commit": commit, "cuda": torch.version.cuda}


class Run(Reporter):
    """The results folder of one run. ``config`` is what config.json records (``settings``, the
    resolved settings, among it); ``identity`` what a resumed run must share with the saved one."""

    def __init__(self, out: str, config: dict, identity: dict, resume: bool = False, dist=None, quiet: bool = False,
                 columns=CYCLE_COLUMNS, label: str = "", trials: int = 1, cycles: int = 1, out_flag: str = "--out"):
        self.folder = ResultsFolder(out)
        self.label, self.trials, self.cycles = label, trials, cycles
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.columns = list(columns)
        self.quiet = quiet or not self.is_main  # no bars, no progress lines
        self.tty = sys.stderr.isatty()  # bars on a terminal, else plain progress lines (utils.core.progress._Lines)
        self.identity = _jsonable(identity)
        self.config = config
        self.finished = {}  # trial -> last finished cycle
        self.files = {}  # results-folder file -> sha256, as committed
        self.rows = []
        self._tb = None
        self._lock = None
        check_folder(out, out_flag)
        barrier(dist)  # every rank has checked the folder before rank 0 takes it
        if self.is_main:
            self._lock = self.folder.lock()
            self.folder.remove_temp_files()
        state = self.folder.read_state() if self.folder.has_state() else None
        if state is not None and not state["finished"] and not self.folder.checkpoints():
            self.log(f"{out} holds no finished cycle: starting over in it")
            state = None
        if state is not None:
            if not resume:
                raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
            # a setting newer than the saved run, at None (off), is what that run did
            changed = sorted(k for k in set(state["identity"]) | set(self.identity)
                             if state["identity"].get(k) != self.identity.get(k)
                             and not (k not in state["identity"] and self.identity[k] is None))
            if changed:
                raise UserError(f"--resume: {out} was run with different settings ({', '.join(changed)}); "
                                "use the same settings or another --out")
            self.finished = {int(t): c for t, c in state["finished"].items()}
            self.files = dict(state.get("files", {}))
            self._check_files()
            # cycles.csv is written before state.json: drop rows of a cycle that never committed
            self.rows = [r for r in read_cycles(out) if r["cycle"] <= self.finished.get(r["trial"], -1)]
            self._roll_forward()
            self._check_rows()
            done = ", ".join(f"trial {t}: cycle {c}" for t, c in sorted(self.finished.items())) or "nothing yet"
            self.log(f"resuming {out} (finished {done})")
        elif resume:
            self.log(f"--resume: {out} holds no run yet; starting a fresh one")
        barrier(dist)  # every rank has read the folder before rank 0 writes to it
        if self.is_main:
            self.folder.write_config({"label": label, **config, "versions": _versions()})
            if state is None:
                self.folder.write_rows([], self.columns)
                self._write_state()
        set_active(self)  # what predict() reports through (active_run())

    # ------------------------------------------------------------------ resume
    def restore(self, trial: int) -> dict | None:
        """The checkpoint of ``trial`` after its last finished cycle (RNG states restored), or
        None when the trial has not finished a cycle yet."""
        if trial not in self.finished:
            return None
        checkpoint = self.folder.load_checkpoint(trial)
        if checkpoint.get("cycle") != self.finished[trial]:
            raise UserError(f"checkpoint of trial {trial} in {self.folder.path} does not match state.json; "
                            "delete the run folder and start again")
        set_rng_state(checkpoint["rng"], self.dist)
        return checkpoint

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.folder.path)

    def _check_files(self) -> None:
        """Every labeled-set file state.json names is the one committed, and every trial with a
        finished cycle has its checkpoint (which one: _roll_forward); checked before anything is
        written."""
        for name, digest in self.files.items():
            if name.startswith("labeled") and file_sha256(os.path.join(self.folder.path, name)) != digest:
                raise UserError(f"{os.path.join(self.folder.path, name)} is missing or changed since the run wrote "
                                "it; restore it or start a new --out")
        for trial in sorted(self.finished):
            if not os.path.isfile(self.folder.checkpoint_path(trial)):
                raise UserError(f"{self.folder.checkpoint_path(trial)} is missing (trial {trial} finished cycle "
                                f"{self.finished[trial]}); restore it or start a new --out")

    def _roll_forward(self) -> None:
        """Finish the commit of a cycle whose checkpoint was written before a kill stopped the run
        (the checkpoint is the commit point: it holds the cycle's labeled set, RNG state and row);
        refuse a checkpoint that is neither the committed one nor the next."""
        for trial, path in sorted(self.folder.checkpoints().items()):
            name = self._relative(path)
            if self.files.get(name) and file_sha256(path) == self.files[name]:
                continue
            checkpoint = self.folder.load_checkpoint(trial)
            cycle, row = checkpoint.get("cycle"), checkpoint.get("row")
            if not self.files.get(name) and trial in self.finished and cycle == self.finished[trial]:
                continue  # a run from before checksums
            if cycle != self.finished.get(trial, -1) + 1 or row is None or \
                    checkpoint.get("identity", self.identity) != self.identity:
                raise UserError(f"{path} does not belong to this run's committed state (another run's, or changed); "
                                "restore it or start a new --out")
            if self.is_main:
                labeled = self.folder.labeled_path(trial, cycle)
                self.files[self._relative(labeled)] = self.folder.save_labeled(trial, cycle, checkpoint["labeled_idx"])
                self.files[name] = file_sha256(path)
            self.rows.append(row)
            self.finished[trial] = cycle
            self.log(f"completed the commit of trial {trial} cycle {cycle}, which a stop had interrupted")
            if self.is_main:
                self.folder.write_rows(self.rows, self.columns)
                self._write_state()

    def _check_rows(self) -> None:
        """cycles.csv holds a row for every finished cycle (a truncated or edited file is refused)."""
        have = {(r["trial"], r["cycle"]) for r in self.rows}
        missing = [(t, c) for t, last in sorted(self.finished.items()) for c in range(last + 1) if (t, c) not in have]
        if missing:
            trial, cycle = missing[0]
            raise UserError(f"{self.folder.cycles_path} lacks the row of finished trial {trial} cycle {cycle}"
                            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; it changed after the "
                            "run wrote it: restore it or start a new --out")

    def first_cycle(self, trial: int) -> int:
        return self.finished.get(trial, -1) + 1

    def cycles_left(self, trial: int) -> range:
        """The cycles of ``trial`` still to run."""
        return range(self.first_cycle(trial), self.cycles)

    # ------------------------------------------------------------------ commit
    def commit(self, trial: int, cycle: int, labeled_idx: np.ndarray, queried: np.ndarray,
               test_acc: EvalScores | float | None, times: dict, checkpoint: dict,
               extra: dict | None = None) -> np.ndarray:
        """Record a finished cycle: the model trained on ``labeled_idx`` scored ``test_acc`` (%, with its
        balanced and worst-class accuracy when it is a EvalScores; None: no test images, left empty
        in cycles.csv), then ``queried`` was added; ``times`` holds train_seconds/query_seconds,
        ``extra`` any further cycles.csv columns, ``checkpoint`` everything needed to continue the
        trial. Returns the new labeled indices."""
        scores = test_acc.columns() if isinstance(test_acc, EvalScores) else {}
        test_acc = test_acc.acc if isinstance(test_acc, EvalScores) else test_acc
        row = {"trial": trial, "cycle": cycle, "n_labeled": len(labeled_idx),
               "test_acc": "" if test_acc is None else round(test_acc, 4), **times, **scores, **(extra or {})}
        labeled_idx = np.concatenate([labeled_idx, queried])
        self.rows.append(row)
        self.finished[trial] = cycle
        rng = rng_state(self.dist)  # (every rank: each adds its own device's state)
        self.log(f"{self.label} Trial:{trial + 1}/{self.trials} || Cycle:{cycle + 1}/{self.cycles} || "
                 f"Label set size:{row['n_labeled']} || Test acc:" + ("-" if test_acc is None else f"{test_acc:.2f}"))
        if not self.is_main:
            return labeled_idx
        checkpoint = {**checkpoint, "cycle": cycle, "labeled_idx": torch.as_tensor(np.asarray(labeled_idx)),
                      "rng": rng, "row": row, "identity": self.identity}
        self.files[self._relative(self.folder.labeled_path(trial, cycle))] = \
            self.folder.save_labeled(trial, cycle, labeled_idx)
        # the checkpoint is the commit point (see _roll_forward); cycles.csv and state.json follow it
        self.files[self._relative(self.folder.checkpoint_path(trial))] = self.folder.save_checkpoint(trial, checkpoint)
        self.folder.write_rows(self.rows, self.columns)
        self._write_state()
        if test_acc is not None:
            self.scalar(f"trial{trial}/test_acc", row["test_acc"], row["n_labeled"])  # step: labeled-set size
        for key in ("train_seconds", "query_seconds"):
            if key in times:
                self.scalar(f"trial{trial}/{key}", times[key], cycle)
        return labeled_idx

    def save_model(self, trial: int, cycle: int, model: torch.nn.Module, name: str = "") -> None:
        """The cycle's trained weights, ``<out>/models/trial<T>_cycle<C>[_<name>].pt``."""
        if self.is_main:
            path = os.path.join(self.folder.path, "models", f"trial{trial}_cycle{cycle}{'_' + name if name else ''}.pt")
            atomic_write(path, lambda fh: torch.save(model.state_dict(), fh))

    def _write_state(self):
        self.folder.write_state({"identity": self.identity, "finished": self.finished, "files": self.files,
                                 "plan": {"trials": self.trials, "cycles": self.cycles}})

    def close(self) -> None:
        release(self)
        if self._tb:
            self._tb.close()
        if self._lock is not None:
            self._lock.close()  # (a Run of the same folder in this process takes it again)
            self._lock = None


def _jsonable(value):
    """The value as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def start_run(args, cfg: Settings, data, dist, name_parts: tuple, label: str, cycles: int,
              columns=CYCLE_COLUMNS, derived: dict | None = None, out: str | None = None,
              out_flag: str = "--out") -> Run:
    """The results folder of an entry script (``--out``, or a fresh one under results/). config.json
    records the script, the resolved settings (and which --epochs scaled), ``derived`` values
    (what the settings and the data determine, e.g. budgets in images) and how the run was
    started (with ``derived.class_counts``, the pool's images per class, when the data were subsampled
    to a long tail); settings.yaml the settings as a --config-file that repeats the run; logs the run's
    first line and the scaled settings. The folder: ``--out``, else
    ``out`` (a script's own default, made from its flag ``out_flag``), else a fresh one under results/."""
    out = args.out or out or default_out(*name_parts, dist=dist)
    if getattr(data, "class_counts", None) is not None:  # a long-tailed pool (IMBALANCE): its images per class
        derived = {**(derived or {}), "class_counts": data.class_counts}
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else cfg.script
    identity = {"script": cfg.script, **cfg.identity(), "dataset": data.name,
                **{f"derived.{k}": v for k, v in (derived or {}).items()}, **precision_identity(dist)}
    config = {"script": cfg.script, "settings": cfg.as_dict(), "strategy_key": cfg.strategy_key,
              "scaled": cfg.scaled,
              "resumable": sorted(k for k, key in cfg.tree.items() if key.resumable), "derived": derived or {},
              "run": {"command": [script, *getattr(args, "command", sys.argv[1:])], "out": out,
                      "data_root": args.data_root, "device": str(dist.device), "world_size": dist.world_size,
                      "workers": data.workers, "amp": dist.precision.amp,
                      "channels_last": dist.precision.channels_last, "dataset": data.name,
                      "image_shape": image_shape(data), "model_input_size": data.image_size}}
    run = Run(out, config, identity, args.resume, dist, args.quiet, columns, label, cfg.TRIALS, cycles,
              "--out" if args.out else out_flag)
    if run.is_main:
        command = cfg.script.split()[0]  # (the tree's script: main_al.py --protocol deepal -> main_al.py)
        write_text(os.path.join(out, SETTINGS_FILE), cfg.to_yaml(
            f"{cfg.script}: the settings of {out} (dataset {data.name})\n"
            f"python {command} --config-file {os.path.join(out, SETTINGS_FILE)} --out NEW repeats the run"))
    run.log(f"{label}: {len(data.train_idx)} train / {len(data.test_idx)} test images, {dist.world_size} "
            f"process(es) on {dist.device}; results in {out}")
    for note in cfg.notes():
        run.log(note)
    return run


def precision_identity(dist) -> dict:
    """--amp and --channels-last, which a resumed run must share (nothing for float32 NCHW: the
    identity of such runs is what it was before these flags existed)."""
    p = dist.precision
    return {"amp": p.amp, "channels_last": p.channels_last} if p.active else {}


def image_shape(data) -> list:
    """[C, H, W] of the stored training images (after decoding and IMAGE_SIZE)."""
    return list(data.train.__getitems__([int(data.train_idx[0])])[0].shape[1:])


def default_out(*parts, dist=None) -> str:
    """``results/<parts>_<UTC time>``; under a launcher rank 0's name is used by every rank."""
    from datetime import datetime, timezone

    from utils.core.distributed import broadcast_object

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "_".join(str(p) for p in parts if p) + "_" + stamp
    return broadcast_object(os.path.join("results", name.replace(os.sep, "-").replace(":", "-")), dist)


def check_budget(start: int, query_size: int, cycles: int, pool_size: int) -> None:
    """The run must fit in the pool: ``start + cycles * query_size`` labels (a query follows
    every cycle, the last one included, as TOD)."""
    needed = start + cycles * query_size
    if needed > pool_size:
        raise UserError(f"budget larger than the pool: START + CYCLES*ADDENDUM = {start} + {cycles}*{query_size} = "
                        f"{needed} > {pool_size} training samples; lower --cycles or --set START=/ADDENDUM=")
