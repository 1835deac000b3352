"""The active-learning run: results folder, per-cycle commit, resume, logging.

An entry script drives its own trial/cycle loop (the paper's algorithm) and calls

    run = start_run(args, "main_X.py", settings, data, dist, ...)
    for trial in range(trials):
        saved = run.restore(trial)             # None, or the checkpoint after the last finished cycle
        for cycle in range(run.first_cycle(trial), cycles):
            ...train, test, query...
            labeled_idx = run.commit(trial, cycle, labeled_idx, queried, test_acc, times, checkpoint)

``commit`` writes the cycle's labeled set, its row of cycles.csv, the trial checkpoint (models
plus every RNG state) and last the state file, each atomically: a run killed at any point
resumes from the last committed cycle and reproduces the uninterrupted run on the CPU.
"""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch

from utils.core.cli import UserError
from utils.core.distributed import barrier
from utils.core.results import CYCLE_COLUMNS, ResultsFolder, read_cycles
from utils.core.train import rng_state, set_rng_state

# Settings that may change when a run is resumed: they do not change its results.
# (--epochs and --set are folded into the config keys, which are compared.)
RESUMABLE = {"out", "resume", "quiet", "workers", "device", "data_root", "download", "local_rank",
             "cycles", "trials", "CYCLES", "TRIALS", "al_nb_cycles", "world_size", "overrides"}


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


class Run:
    def __init__(self, out, settings, resume=False, dist=None, quiet=False, columns=CYCLE_COLUMNS, label="",
                 trials=1, cycles=1):
        self.folder = ResultsFolder(out)
        self.label, self.trials, self.cycles = label, trials, cycles
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self.columns = list(columns)
        self.quiet = quiet or not sys.stderr.isatty() or not self.is_main
        self.identity = _jsonable({k: v for k, v in settings.items() if k not in RESUMABLE})
        self.finished = {}  # trial -> last finished cycle
        self.rows = []
        self._tb = None
        if self.folder.has_state():
            if not resume:
                raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
            state = self.folder.read_state()
            changed = sorted(k for k in set(state["identity"]) | set(self.identity)
                             if state["identity"].get(k) != self.identity.get(k))
            if changed:
                raise UserError(f"--resume: {out} was run with different settings ({', '.join(changed)}); "
                                "use the same settings or another --out")
            self.finished = {int(t): c for t, c in state["finished"].items()}
            # cycles.csv is written before state.json: drop rows of a cycle that never committed
            self.rows = [r for r in read_cycles(out) if r["cycle"] <= self.finished.get(r["trial"], -1)]
            done = ", ".join(f"trial {t}: cycle {c}" for t, c in sorted(self.finished.items())) or "nothing yet"
            self.log(f"resuming {out} (finished {done})")
        barrier(dist)  # every rank has read the folder before rank 0 writes to it
        if self.is_main:
            self.folder.write_config({"label": label, "settings": dict(sorted(settings.items())),
                                     "versions": _versions()})
            if not self.folder.has_state():
                self.folder.write_rows([], self.columns)
                self._write_state()

    # ------------------------------------------------------------------ resume
    def restore(self, trial):
        """The checkpoint of ``trial`` after its last finished cycle (RNG states restored), or
        None when the trial has not finished a cycle yet."""
        if trial not in self.finished:
            return None
        checkpoint = self.folder.load_checkpoint(trial)
        if checkpoint.get("cycle") != self.finished[trial]:
            raise UserError(f"checkpoint of trial {trial} in {self.folder.path} does not match state.json; "
                            "delete the run folder and start again")
        set_rng_state(checkpoint["rng"])
        return checkpoint

    def first_cycle(self, trial):
        return self.finished.get(trial, -1) + 1

    # ------------------------------------------------------------------ commit
    def commit(self, trial, cycle, labeled_idx, queried, test_acc, times, checkpoint, extra=None):
        """Record a finished cycle: the model trained on ``labeled_idx`` scored ``test_acc`` (%),
        then ``queried`` was added; ``times`` holds train_seconds/query_seconds, ``extra`` any
        further cycles.csv columns, ``checkpoint`` everything needed to continue the trial.
        Returns the new labeled indices."""
        row = {"trial": trial, "cycle": cycle, "n_labeled": len(labeled_idx), "test_acc": round(test_acc, 4),
               **times, **(extra or {})}
        labeled_idx = np.concatenate([labeled_idx, queried])
        self.rows.append(row)
        self.finished[trial] = cycle
        self.log(f"{self.label} Trial:{trial + 1}/{self.trials} || Cycle:{cycle + 1}/{self.cycles} || "
                 f"Label set size:{row['n_labeled']} || Test acc:{test_acc:.2f}")
        if not self.is_main:
            return labeled_idx
        checkpoint = {**checkpoint, "cycle": cycle, "labeled_idx": torch.as_tensor(np.asarray(labeled_idx)),
                      "rng": rng_state()}
        self.folder.save_labeled(trial, cycle, labeled_idx)
        self.folder.save_checkpoint(trial, checkpoint)
        self.folder.write_rows(self.rows, self.columns)
        self._write_state()
        self.scalar(f"trial{trial}/test_acc", row["test_acc"], row["n_labeled"])
        return labeled_idx

    def _write_state(self):
        self.folder.write_state({"identity": self.identity, "finished": self.finished})

    # ------------------------------------------------------------------ logging
    def log(self, message):
        if self.is_main:
            print(message, flush=True)

    def scalar(self, tag, value, step):
        if not self.is_main:
            return
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(self.folder.tb_dir)
        self._tb.add_scalar(tag, value, step)

    def progress(self, iterable, desc, total=None):
        if self.quiet:
            return iterable
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)

    def log_epoch(self, bar, tag, epoch, loss):
        """The mean training loss of an epoch: to tensorboard and the progress bar."""
        self.scalar(f"{tag}/train_loss", loss, epoch)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.3f}")

    @contextmanager
    def timer(self, times, key):
        start = time.perf_counter()
        yield
        times[key] = round(time.perf_counter() - start, 3)

    def close(self):
        if self._tb is not None:
            self._tb.close()


def _jsonable(value):
    """The value as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def start_run(args, script, settings, data, dist, name_parts, label, trials, cycles, columns=CYCLE_COLUMNS):
    """The results folder of an entry script (``--out``, or a fresh one under results/), with
    every setting recorded; logs the run's first line."""
    out = args.out or default_out(*name_parts, dist=dist)
    settings = {"script": script, **vars(args), **settings, "dataset": data.name, "world_size": dist.world_size}
    run = Run(out, settings, args.resume, dist, args.quiet, columns, label, trials, cycles)
    run.log(f"{label}: {len(data.train_idx)} train / {len(data.test_idx)} test images, {dist.world_size} "
            f"process(es) on {dist.device}; results in {out}")
    return run


def default_out(*parts, dist=None):
    """``results/<parts>_<UTC time>``; under a launcher rank 0's name is used by every rank."""
    from datetime import datetime, timezone

    from utils.core.distributed import broadcast_object

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "_".join(str(p) for p in parts if p) + "_" + stamp
    return broadcast_object(os.path.join("results", name.replace(os.sep, "-").replace(":", "-")), dist)


def check_budget(start, query_size, cycles, pool_size, subset=None):
    """The run must fit in the pool: ``start + cycles * query_size`` labels (a query follows
    every cycle, the last one included, as TOD), each query drawn from ``subset`` candidates."""
    needed = start + cycles * query_size
    if needed > pool_size:
        raise UserError(f"budget larger than the pool: START + CYCLES*ADDENDUM = {start} + {cycles}*{query_size} = "
                        f"{needed} > {pool_size} training samples; lower --cycles or --set START=/ADDENDUM=")
    if subset is not None and query_size > subset:
        raise UserError(f"ADDENDUM={query_size} is larger than SUBSET={subset}, the candidates scored per query")
