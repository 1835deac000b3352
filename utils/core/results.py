"""The results folder (DESIGN.md, 'The results folder') and its readers.

```
<out>/config.json                       every resolved setting, versions, git commit
<out>/cycles.csv                        one row per finished cycle
<out>/labeled/trial{T}_cycle{C}.npy     labeled indices after cycle C's query
<out>/state.json                        resume point
<out>/checkpoints/trial{T}.pt           models + RNG state after the last finished cycle
<out>/tb/                               tensorboardX events
```
Every file is written atomically (temp file in the same folder + ``os.replace``).
"""

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import torch

from utils.core.cli import UserError

CYCLE_COLUMNS = ["trial", "cycle", "n_labeled", "test_acc", "train_seconds", "query_seconds"]
OPENSET_COLUMNS = ["n_queried", "n_queried_known", "recall", "precision"]


def atomic_write(path: str, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str, what: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path} is unreadable or corrupt ({exc}); delete it or choose another --out") from None


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

    def has_state(self) -> bool:
        return os.path.isfile(self.state_path)

    def read_state(self) -> dict:
        state = read_json(self.state_path, "state file")
        if not isinstance(state, dict) or "identity" not in state or "finished" not in state:
            raise UserError(f"state file {self.state_path} is corrupt (missing keys); "
                            "delete it or choose another --out")
        return state

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

    def save_labeled(self, trial: int, cycle: int, labeled_idx: np.ndarray) -> None:
        atomic_write(self.labeled_path(trial, cycle), lambda fh: np.save(fh, np.asarray(labeled_idx, dtype=np.int64)))

    def save_checkpoint(self, trial: int, checkpoint: dict) -> None:
        atomic_write(self.checkpoint_path(trial), lambda fh: torch.save(checkpoint, fh))

    def load_checkpoint(self, trial: int) -> dict:
        path = self.checkpoint_path(trial)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"checkpoint {path} is unreadable or corrupt ({exc}); "
                            "delete the run folder and start again") from None


def read_cycles(path: str) -> list[dict]:
    """Rows of ``<run>/cycles.csv`` as dicts with numeric values."""
    try:
        with open(os.path.join(path, "cycles.csv")) as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"cannot read the results of {path} ({exc})") from None
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = int(value)
            except ValueError:
                try:
                    row[key] = float(value)
                except ValueError:
                    pass
    return rows


def read_config(path: str) -> dict:
    return read_json(os.path.join(path, "config.json"), "config file")
