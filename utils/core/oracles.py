"""Who answers the queries: the simulated oracle (:class:`Oracle`: the training labels, with an open
set's unknown images set aside) and a person (:class:`AnnotatorOracle`, main_al.py --oracle human|folder).

A person answers on their own images (utils/core/data/own_images.py: ``folder:PATH`` with
``labeled/<class>/``, ``unlabeled/**``). After a query the run writes ``<out>/to_label/cycle<C>.csv``
(path, an empty label, the model's prediction and its probability) and a contact sheet
``cycle<C>.png`` of the queried images numbered as the rows, and the same query as Label Studio tasks
with their labeling configuration (utils/core/labelstudio.py). ``--oracle human``: the run stops; the
person fills the ``label`` column (a class name or ``unknown``), or labels the tasks in Label Studio
and exports them to ``to_label/cycle<C>.export.json`` (or ``.export.csv``, or any file given with
``--answers``), and runs the command again with --resume. ``--oracle folder``: the run waits until
every queried image has been moved into ``PATH/labeled/<class>/`` (or ``PATH/unknown/``). Images
answered ``unknown`` are set aside, as open-set runs do: they cost a label, are never trained on and
never queried again.
"""

from __future__ import annotations

import csv
import json
import os
import time
from typing import NamedTuple

import numpy as np
import torch

from utils.core.cells import csv_text, read_rows
from utils.core.data.own_images import (
    SET_ASIDE,
    UNKNOWN,
    UNLABELED,
    OwnImages,
    _gone,
    _moved_to,
    _relocate,
    manifest_path,
    write_manifest,
)
from utils.core.distributed import broadcast_object
from utils.core.errors import UserError
from utils.core.labelstudio import labeling_config, read_export, tasks
from utils.core.openset import OpenSetPool, choose_known_classes, known_class_view, split_query
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS, atomic_write, write_text
from utils.core.train import predict, softmax_probs

TO_LABEL_COLUMNS = ["path", "label", "predicted", "score"]


class Answer(NamedTuple):
    """An oracle's answer to a query: the images that join the labeled set now, those set aside
    (unknown classes), those ``waiting`` for a person's labels (next cycle), the cycles.csv columns."""

    known: np.ndarray
    unknown: np.ndarray
    waiting: np.ndarray
    columns: dict


class Oracle:
    """Answers queries. Closed set (``pool`` None): every queried image joins the labeled set.
    Open set: the known ones join it, the unknown ones are discarded (they cost a label and leave
    the pool, never trained on), and each answer comes with the open-set columns. Stateless: the
    caller keeps the labeled and the discarded images. (A person answering: AnnotatorOracle below.)"""

    waits = False  # answers come at once (True: they wait for a person)

    def __init__(self, pool: OpenSetPool | None = None, targets: np.ndarray | None = None):
        self.pool, self.targets = pool, targets

    @property
    def columns(self) -> list:
        return CYCLE_COLUMNS + (OPENSET_COLUMNS if self.pool is not None else [])

    def labelable(self, train_idx: np.ndarray) -> np.ndarray:
        """The training images an initial labeled set may hold (the known ones)."""
        return train_idx if self.pool is None else train_idx[self.pool.is_known(self.targets, train_idx)]

    def unlabeled(self, train_idx: np.ndarray, labeled_idx: np.ndarray, discarded: np.ndarray) -> np.ndarray:
        return np.setdiff1d(train_idx, np.union1d(labeled_idx, discarded))

    def start(self, out: str) -> None:
        """Whatever the oracle records in a new run folder ``out`` (nothing here)."""

    def report(self, out: str, cycle: int, model, pool_idx: np.ndarray, queried: np.ndarray, batch_size: int,
               workers: int, probs: torch.Tensor | None = None) -> None:
        """Whatever the oracle shows after a cycle's query (nothing here)."""

    def answer(self, queried: np.ndarray, labeled_idx: np.ndarray) -> Answer:
        """The labels of ``queried`` (see :class:`Answer`)."""
        none = np.empty(0, dtype=np.int64)
        if self.pool is None:
            return Answer(queried, none, none, {})
        known, unknown, columns = split_query(self.pool, self.targets, queried, len(labeled_idx))
        return Answer(known, unknown, none, columns)


def open_set(data, known_classes, random_choice=False, seed=0):
    """With ``known_classes`` K (0 or None: a closed set): the K-way view of ``data`` and its
    Oracle; the known classes are 0..K-1 or a seeded random choice (``random_choice``)."""
    if not known_classes:
        return data, Oracle()
    targets = data.train_targets
    known = choose_known_classes(data.num_classes, known_classes, random_choice, seed)
    pool = OpenSetPool(known, np.empty(0, dtype=np.int64), data.train_idx,
                       int(np.isin(targets[data.train_idx], known).sum()))
    return known_class_view(data, pool), Oracle(pool, targets)


# ----------------------------------------------------------------------------- what the person sees

def to_label_path(out: str, cycle: int, ext: str = "csv") -> str:
    return os.path.join(out, "to_label", f"cycle{cycle}.{ext}")


def labeling_config_path(out: str) -> str:
    return os.path.join(out, "to_label", "labeling_config.xml")


def answers_path(out: str, cycle: int, given: str | None = None) -> str:
    """Where the answers to cycle ``cycle``'s query are read: ``given`` (--answers), else a Label
    Studio export ``to_label/cycle<C>.export.json`` or ``.export.csv``, else the query's CSV."""
    if given:
        if not os.path.isfile(given):
            raise UserError(f"--answers {given}: no such file; give the Label Studio export (JSON, JSON-MIN or "
                            "CSV) or the filled CSV of the query")
        return given
    exports = [p for p in (to_label_path(out, cycle, "export.json"), to_label_path(out, cycle, "export.csv"))
               if os.path.isfile(p)]
    if len(exports) > 1:
        raise UserError(f"{exports[0]} and {exports[1]} both hold answers to the query of cycle {cycle}; keep one")
    return exports[0] if exports else to_label_path(out, cycle)


def is_export(path: str) -> bool:
    """Whether ``path`` is a Label Studio export (JSON, or a CSV with the tasks' cycle and run
    columns) rather than the query's CSV."""
    if not path.lower().endswith(".csv"):
        return True
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # (read_answers names the problem)
    return {"cycle", "run"} <= set(header)


def run_name(out: str) -> str:
    """How the Label Studio tasks name the run: its results folder, absolute."""
    return os.path.abspath(out)


def contact_sheet(images: torch.Tensor, tile: int = 96, columns: int = 10):
    """A PIL image of uint8 ``images`` ``[N, C, H, W]`` in a grid, each tile numbered 1..N (the
    rows of the query's CSV)."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    x = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)
    x = torch.nn.functional.interpolate(x.float(), size=(tile, tile), mode="bilinear", align_corners=False)
    grid = make_grid(x.clamp(0, 255).to(torch.uint8), nrow=min(columns, len(x)), padding=4, pad_value=255)
    sheet = Image.fromarray(grid.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(sheet)
    step = tile + 4
    for n in range(len(x)):
        left, top = 4 + (n % columns) * step, 4 + (n // columns) * step
        draw.rectangle([left, top, left + 8 + 7 * len(str(n + 1)), top + 13], fill=(0, 0, 0))
        draw.text((left + 4, top + 1), str(n + 1), fill=(255, 255, 0))
    return sheet


def read_answers(path: str, expected: list, classes: list) -> dict:
    """The labels a person filled into the query CSV ``path``, {relative path: label code}: one
    row per ``expected`` path (any order: the rows may be sorted), each label a class name or
    ``unknown``. Any problem stops with the row."""
    fix = f"fill the label column with one of {', '.join(classes)} or {UNKNOWN}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header, rows = read_rows(fh)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path} ({exc}); it holds the query to label: restore it") from None
    if any(c not in header for c in TO_LABEL_COLUMNS) or len(header) != len(set(header)):
        raise UserError(f"{path} has columns {', '.join(header) or 'none'}; expected {', '.join(TO_LABEL_COLUMNS)} "
                        "(keep the header as written)")
    wanted, labels = set(expected), {}
    for number, row in enumerate(rows, start=1):
        rel = (row.get("path") or "").strip()
        if rel not in wanted:
            raise UserError(f"{path} row {number}: {rel!r} is not one of the queried images; restore the path "
                            "and change only the label column")
        if rel in labels:
            raise UserError(f"{path} row {number}: {rel} appears twice; keep one row per image")
        name = (row.get("label") or "").strip()
        if not name:
            raise UserError(f"{path} row {number} ({rel}) has no label: {fix}")
        if name.lower() == UNKNOWN:
            labels[rel] = SET_ASIDE
        elif name in classes:
            labels[rel] = classes.index(name)
        else:
            raise UserError(f"{path} row {number} ({rel}): {name!r} is not a class: {fix}")
    missing = [rel for rel in expected if rel not in labels]
    if missing:
        raise UserError(f"{path} has no row for {missing[0]} ({len(missing)} queried image(s) missing): restore "
                        "the rows and change only the label column")
    return labels


class AnnotatorOracle(Oracle):
    """A person answers the queries (``mode`` human: in the query's CSV; folder: by moving the
    images). Each answer is collected at the start of the next cycle (:meth:`collect`); until then
    the queried images wait (:attr:`Answer.waiting`)."""

    waits = True

    def __init__(self, images: OwnImages, data, mode: str, poll_seconds: float = 5.0, dist=None,
                 answers: str | None = None):
        super().__init__()
        self.images, self.data, self.mode, self.poll_seconds, self.dist = images, data, mode, poll_seconds, dist
        if answers and mode != "human":
            raise UserError(f"--answers: --oracle {mode} reads the answers from the folder; it is for --oracle human")
        self.answers_file = answers  # --answers: where the answers of the waiting query are (None: see answers_path)
        self.answers = None  # (cycle, {path: label}) of the waiting query, read and checked by check_answers

    @property
    def columns(self) -> list:
        return CYCLE_COLUMNS + ["n_queried"]

    @property
    def stops(self) -> bool:
        """Whether the run stops after a query (human) or waits for the answers (folder)."""
        return self.mode == "human"

    def labelable(self, train_idx: np.ndarray) -> np.ndarray:
        return self.images.initial_idx

    def answer(self, queried: np.ndarray, labeled_idx: np.ndarray) -> Answer:
        return Answer(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.asarray(queried),
                      {"n_queried": len(queried)})

    def start(self, out: str) -> None:
        """Write the run's image list (a fresh run; a resumed one has it)."""
        if not os.path.isfile(manifest_path(out)) and (self.dist is None or self.dist.is_main):
            write_manifest(out, self.images)

    def waiting_query(self) -> tuple[int, np.ndarray] | None:
        """(cycle, indices) of the last query not answered yet, from the image list."""
        asked = [(c, i) for i, c in enumerate(self.images.queried_in)
                 if c is not None and self.images.labels[i] == UNLABELED]
        if not asked:
            return None
        cycle = max(c for c, _ in asked)
        return cycle, np.asarray([i for c, i in asked if c == cycle], dtype=np.int64)

    def check_answers(self, out: str, finished: int | None) -> None:
        """Before a resumed run writes anything: the labels of the query of cycle ``finished``
        (human: read and checked now; folder: whatever has been moved is checked when collected)."""
        waiting = self.waiting_query()
        if self.mode != "human" or waiting is None or waiting[0] != finished:
            return
        cycle, indices = waiting
        expected, classes = [self.images.paths[i] for i in indices], self.images.classes
        path = answers_path(out, cycle, self.answers_file)
        if is_export(path):
            names = read_export(path, expected, classes, UNKNOWN, cycle, run_name(out))
            labels = {rel: SET_ASIDE if name == UNKNOWN else classes.index(name) for rel, name in names.items()}
        else:
            labels = read_answers(path, expected, classes)
        self.answers = (cycle, labels)

    def report(self, out: str, cycle: int, model, pool_idx: np.ndarray, queried: np.ndarray, batch_size: int,
               workers: int, probs: torch.Tensor | None = None) -> None:
        """After cycle ``cycle``'s query: ``predictions.csv`` (every pool image's predicted class and
        probability) and, for a query, ``to_label/cycle<C>.csv``, ``.png`` and ``.tasks.json`` (with
        ``labeling_config.xml``); the image list records the query."""
        if probs is None:  # (``probs``: the pool's softmax outputs, when the query computed them)
            probs = predict(model, self.data, pool_idx, softmax_probs, batch_size, self.dist, workers,
                            desc="predictions")
        score, predicted = probs.max(1)
        names = [self.images.classes[int(p)] for p in predicted]
        for i in queried.tolist():
            self.images.queried_in[i] = cycle
        if self.dist is not None and not self.dist.is_main:
            return
        paths = self.images.paths
        write_text(os.path.join(out, "predictions.csv"), csv_text(
            ["path", "predicted", "confidence"],
            [[paths[i], n, f"{float(s):.4f}"] for i, n, s in zip(pool_idx.tolist(), names, score)]))
        if len(queried):
            at = {int(i): k for k, i in enumerate(pool_idx.tolist())}
            rows = [[paths[i], "", names[at[i]], f"{float(score[at[i]]):.4f}"] for i in queried.tolist()]
            write_text(to_label_path(out, cycle), csv_text(TO_LABEL_COLUMNS, rows))
            query = tasks(*(list(column) for column in zip(*[(r[0], r[2], float(r[3])) for r in rows])), cycle,
                          run_name(out))
            write_text(to_label_path(out, cycle, "tasks.json"), json.dumps(query, indent=1) + "\n")
            write_text(labeling_config_path(out), labeling_config(self.images.classes, UNKNOWN))
            images = self.data.train.__getitems__(queried.tolist())[0]
            atomic_write(to_label_path(out, cycle, "png"), lambda fh: contact_sheet(images).save(fh, format="PNG"))
        write_manifest(out, self.images)

    def instructions(self, out: str, cycle: int, count: int) -> str:
        classes = ", ".join(self.images.classes)
        if self.mode == "human":
            sheet = to_label_path(out, cycle, "png")
            return (f"label the {count} images of {to_label_path(out, cycle)} (pictures: {sheet}): fill the label "
                    f"column with {classes} or {UNKNOWN} (or label {to_label_path(out, cycle, 'tasks.json')} in Label "
                    f"Studio and export them to {to_label_path(out, cycle, 'export.json')}), then run the same "
                    "command with --resume")
        root = self.images.root
        return (f"move each of the {count} images listed in {to_label_path(out, cycle)} into "
                f"{os.path.join(root, 'labeled')}/<class>/ ({classes}) or {os.path.join(root, UNKNOWN)}/; waiting")

    def collect(self, out: str, cycle: int, waiting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The answers to cycle ``cycle``'s query ``waiting``: (the images that join the labeled
        set, those set aside); their labels go into the training targets and the image list."""
        if self.mode == "human":
            if self.answers is None or self.answers[0] != cycle:
                self.check_answers(out, cycle)
            if self.answers is None or self.answers[0] != cycle:
                where = answers_path(out, cycle, self.answers_file)
                raise UserError(f"no labels found for the query of cycle {cycle} in {where}")
            labels = np.asarray([self.answers[1][self.images.paths[i]] for i in waiting.tolist()], dtype=np.int64)
        else:
            labels = self._watch(out, cycle, waiting)
        labels = np.asarray(broadcast_object(labels.tolist(), self.dist), dtype=np.int64)
        self.images.labels[waiting] = labels
        for i in waiting.tolist():
            self.images.labeled_in[i] = cycle
        known = labels >= 0
        self.data.train.targets[torch.as_tensor(waiting[known])] = torch.as_tensor(labels[known])
        if self.dist is None or self.dist.is_main:
            write_manifest(out, self.images)
        return waiting[known], waiting[~known]

    def _watch(self, out: str, cycle: int, waiting: np.ndarray) -> np.ndarray:
        """--oracle folder: wait until every image of ``waiting`` is under labeled/<class>/ or
        unknown/; their labels."""
        root, classes = self.images.root, self.images.classes
        last_left = None
        while True:
            moved, taken = _moved_to(root), set(self.images.paths)
            labels, left = [], 0
            for i in waiting.tolist():
                rel = self.images.paths[i]
                places = _relocate(root, rel, moved, taken) or _relocate(root, rel, _moved_to(root), taken)
                if not places:  # looked for twice: not a file moved between the two looks
                    raise UserError(f"{_gone(root, rel)}; put it back (or into labeled/<class>/ or {UNKNOWN}/) and "
                                    "run again with --resume")
                if len(places) > 1:
                    raise UserError(f"{os.path.basename(rel)} is in {len(places)} places ({', '.join(places)}); "
                                    "keep one")
                parts = places[0].split(os.sep)
                if parts[0] == "unlabeled":
                    labels.append(UNLABELED)
                    left += 1
                    continue
                if parts[0] == UNKNOWN:
                    labels.append(SET_ASIDE)
                elif parts[1] in classes:
                    labels.append(classes.index(parts[1]))
                else:
                    raise UserError(f"{places[0]}: {parts[1]} is not a class of this run ({', '.join(classes)}); "
                                    "move the image into one of them")
                self.images.paths[i] = places[0]
                self.data.train.paths[i] = os.path.join(root, places[0])
            if not left:
                return np.asarray(labels, dtype=np.int64)
            if left != last_left:
                print(f"waiting for {left} of {len(waiting)} images of {to_label_path(out, cycle)} to be moved into "
                      f"{os.path.join(root, 'labeled')}/<class>/ or {os.path.join(root, UNKNOWN)}/ "
                      "(Ctrl-C stops; --resume continues)", flush=True)
                last_left = left
            time.sleep(self.poll_seconds)
