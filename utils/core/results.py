"""The results folder (README.md, 'The results folder') and its readers.

```
<out>/config.json                       every resolved setting, versions, git commit
<out>/cycles.csv                        one row per finished cycle
<out>/labeled/trial{T}_cycle{C}.npy     labeled indices after cycle C's query
<out>/state.json                        resume point
<out>/checkpoints/trial{T}.pt           models + RNG state after the last finished cycle
<out>/tb/                               tensorboardX events
```
Every file is written atomically (temp file in the same folder + ``os.replace``) with the
permissions the user's umask gives new files.
"""

import csv
import errno
import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import torch

from utils.core.errors import UserError

# balanced_acc, min_class_acc: the mean and the lowest per-class test accuracy (%); folders written before
# they existed lack them (readers take any subset of the columns after n_labeled)
CYCLE_COLUMNS = ["trial", "cycle", "n_labeled", "test_acc", "train_seconds", "query_seconds", "balanced_acc",
                 "min_class_acc"]
OPENSET_COLUMNS = ["n_queried", "n_queried_known", "recall", "precision"]


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import (single-threaded): new files get 0o666 & ~umask, as open() gives


def atomic_write(path: str, write: Callable[[BinaryIO], object]) -> str:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then rename it over ``path``;
    returns the file's sha256. A write the system refuses (disk full, permissions) stops with one
    line; the old file stays."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0o600 would hide results from collaborators
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            fh.seek(0)
            digest = _sha256(fh)
        os.replace(tmp, path)
        return digest
    except BaseException as exc:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        cause = _write_failure(exc)
        if cause is None:
            raise
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(f"no space left to write {path}: free some and run again with --resume") from None
        raise UserError(f"cannot write {path} ({cause.strerror or cause}): choose another --out or fix its "
                        "permissions") from None


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM}


def _write_failure(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write: ``exc`` itself, or an OS-level write failure (disk full,
    quota, read-only file system, ...) in its cause/context chain, as torch.save's zip writer wraps
    it in a RuntimeError. Ctrl-C and other stops are never one."""
    if isinstance(exc, OSError):
        return exc
    if not isinstance(exc, Exception):
        return None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def file_sha256(path: str) -> str | None:
    """The sha256 of the file at ``path`` (None when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return _sha256(fh)
    except OSError:
        return None


def _sha256(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def write_text(path: str, text: str) -> str:
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str, obj) -> str:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def check_folder(path: str, flag: str = "--out") -> None:
    """``path`` can be (or become) a folder this process writes in: not a file, not under a file,
    not in a folder it may not write to. Raises UserError naming ``flag``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {path} lies under the file {parent}; choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {parent} is not writable; choose another {flag}")


def read_json(path: str, what: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path} is unreadable or corrupt ({exc}); delete it or choose another --out") from None


_HELD = {}  # lock file -> the handle this process holds it with


class ResultsFolder:
    def __init__(self, path):
        self.path = path
        self.config_path = os.path.join(path, "config.json")
        self.cycles_path = os.path.join(path, "cycles.csv")
        self.state_path = os.path.join(path, "state.json")
        self.tb_dir = os.path.join(path, "tb")

    def labeled_path(self, trial: int, cycle: int) -> str:
        return os.path.join(self.path, "labeled", f"trial{trial}_cycle{cycle}.npy")

    def checkpoint_path(self, trial: int) -> str:
        return os.path.join(self.path, "checkpoints", f"trial{trial}.pt")

    def checkpoints(self) -> dict:
        """trial -> path of each trial checkpoint in the folder."""
        folder = os.path.dirname(self.checkpoint_path(0))
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return {int(n[5:-3]): os.path.join(folder, n) for n in names
                if n.startswith("trial") and n.endswith(".pt") and n[5:-3].isdigit()}

    def has_state(self) -> bool:
        return os.path.isfile(self.state_path)

    def read_state(self) -> dict:
        state = read_json(self.state_path, "state file")
        valid = isinstance(state, dict) and isinstance(state.get("identity"), dict) and \
            isinstance(state.get("finished"), dict) and isinstance(state.get("files", {}), dict) and \
            all(str(t).isdigit() and isinstance(c, int) for t, c in state["finished"].items())
        if not valid:
            raise UserError(f"state file {self.state_path} is corrupt (keys or types); delete the folder or choose "
                            "another --out")
        return state

    def lock(self):
        """Hold ``<out>/.lock`` for this process (released when it exits, however it exits); a
        second run into the same folder stops with one line. Re-entrant within a process."""
        import fcntl

        path = os.path.join(self.path, ".lock")
        key = os.path.realpath(path)
        if key in _HELD and not _HELD[key].closed:
            return _HELD[key]
        try:
            os.makedirs(self.path, exist_ok=True)
            handle = open(path, "a+")
        except OSError as exc:
            raise UserError(f"cannot use --out {self.path} ({exc.strerror or exc}): choose another folder") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise UserError(f"another run is writing to {self.path}; wait for it to finish or choose another "
                            "--out") from None
        _HELD[key] = handle
        return handle

    def remove_temp_files(self) -> int:
        """Delete the ``.tmp-*`` files a killed run left (call while holding the lock)."""
        removed = 0
        for current, _dirs, names in os.walk(self.path):
            for name in names:
                if name.startswith(".tmp-"):
                    os.remove(os.path.join(current, name))
                    removed += 1
        return removed

    def write_state(self, state: dict) -> None:
        write_json(self.state_path, state)

    def write_config(self, config: dict) -> None:
        write_json(self.config_path, config)

    def write_rows(self, rows: list[dict], columns: list[str]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.cycles_path, text.getvalue())

    def save_labeled(self, trial: int, cycle: int, labeled_idx: np.ndarray) -> str:
        return atomic_write(self.labeled_path(trial, cycle),
                            lambda fh: np.save(fh, np.asarray(labeled_idx, dtype=np.int64)))

    def save_checkpoint(self, trial: int, checkpoint: dict) -> str:
        return atomic_write(self.checkpoint_path(trial), lambda fh: torch.save(checkpoint, fh))

    def load_checkpoint(self, trial: int) -> dict:
        return load_tensors(self.checkpoint_path(trial), "checkpoint", "delete the run folder and start again")


def load_tensors(path: str, what: str, fix: str):
    """``torch.load(path)`` of tensors and plain containers only (``weights_only``: a file that would
    run code is refused); a file that cannot be read, or holds anything else, stops with one line
    naming it, the first line of torch's reason and ``fix``."""
    try:
        with warnings.catch_warnings():  # a damaged file: our one line, not torch's warnings too
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{what} {path} is unreadable or corrupt ({load_failure(exc)}); {fix}") from None


def load_failure(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words: the first line of torch's reason,
    without its advice to load the file unsafely."""
    text = str(exc).strip()
    if "unsupported global" in text.lower():
        return "it holds Python objects other than tensors; they are not loaded, as they could run code"
    if "WeightsUnpickler error" in text:
        return "not a PyTorch file"
    return text.split(". ")[0].splitlines()[0] if text else type(exc).__name__


def read_cycles(path: str) -> list[dict]:
    """Rows of ``<run>/cycles.csv`` as dicts with numeric values (an empty cell stays ""). A file
    that is not such a table (not UTF-8, no trial/cycle/n_labeled columns, ragged or non-integer
    rows) stops with one line naming it."""
    file = os.path.join(path, "cycles.csv")
    try:
        with open(file, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except OSError as exc:
        raise UserError(f"cannot read the results of {path} ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{file} is not a results table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ("trial", "cycle", "n_labeled") if c not in header]
    if missing:
        raise UserError(f"{file} is not a results table of this project (no {', '.join(missing)} column)")
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise UserError(f"{file} line {line}: {len(header)} columns expected")
        for key, value in row.items():
            row[key] = _number(value)
            if key in ("trial", "cycle", "n_labeled") and not isinstance(row[key], int):
                raise UserError(f"{file} line {line}: {key} {value!r} is not a whole number")
    return rows


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_config(path: str) -> dict:
    return read_json(os.path.join(path, "config.json"), "config file")
