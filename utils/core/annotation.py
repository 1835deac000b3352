"""Active learning on your own images, a person answering the queries (main_al.py --oracle human|folder).

The layout ``folder:PATH``::

    PATH/labeled/<class>/*    the images labeled so far (at least one per class, or none at all: then
                              --init-strategy chooses the first images to label)
    PATH/unlabeled/**         the pool: any nesting, no labels
    PATH/test/<class>/*       optional: test accuracy in cycles.csv
    PATH/unknown/             (--oracle folder) where images of none of the classes go

A run lists the images once, in ``<out>/images.csv`` (its index order, every label given so far and
the cycle that asked for it), and reads that list when resumed, so indices never move when files
are added or moved. After a query it writes ``<out>/to_label/cycle<C>.csv`` (path, an empty label,
the model's prediction and its probability) and a contact sheet ``cycle<C>.png`` of the queried
images numbered as the rows. ``--oracle human``: the run stops; the person fills the ``label``
column (a class name or ``unknown``) and runs the command again with --resume. ``--oracle folder``:
the run waits until every queried image has been moved into ``PATH/labeled/<class>/`` (or
``PATH/unknown/``). Images answered ``unknown`` are set aside, as open-set runs do: they cost a
label, are never trained on and never queried again.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from utils.core.cli import UserError
from utils.core.openset import Answer, Oracle
from utils.core.results import CYCLE_COLUMNS, atomic_write, write_text

UNKNOWN = "unknown"
UNLABELED, SET_ASIDE = -1, -2  # label codes of images without a class
TO_LABEL_COLUMNS = ["path", "label", "predicted", "score"]
MANIFEST_COLUMNS = ["index", "path", "label", "labeled_in", "queried_in"]


def is_own_images(path: str) -> bool:
    """Whether ``folder:PATH`` has the annotation layout (``labeled/`` or ``unlabeled/``)."""
    return any(os.path.isdir(os.path.join(path, part)) for part in ("labeled", "unlabeled"))


def is_hidden(relative: str) -> bool:
    """Whether ``relative`` (a path under a listed folder) is, or lies in, a hidden entry: a name
    starting with a dot (.DS_Store, AppleDouble ._img.png files, .ipynb_checkpoints/, .thumbnails/)."""
    return any(part.startswith(".") for part in relative.split(os.sep))


def class_folders(root: str, part: str, classes: list | None = None, reference: str = "labeled") -> tuple:
    """(classes, relative paths, labels) of ``root/part/<class>/**`` with torchvision's listing
    (sorted, recursive, image extensions; hidden files and folders, such as ._img.png or
    .ipynb_checkpoints/, skipped); every class folder must hold an image, and with ``classes``
    given (those of ``root/reference``) no other class may appear."""
    from torchvision.datasets.folder import make_dataset

    folder = os.path.join(root, part)
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not is_hidden(e.name)) \
        if os.path.isdir(folder) else []
    if not found:
        raise UserError(f"{folder} has no class folders: put the images of each class in {folder}/<class>/")
    if classes is None:
        classes = found
    stray = sorted(set(found) - set(classes))
    if stray:
        raise UserError(f"{folder}/{stray[0]} is not a class of {os.path.join(root, reference)}/ "
                        f"({', '.join(classes)}); rename or remove it")

    def is_image(path: str) -> bool:
        return has_file_allowed_extension(path, IMG_EXTENSIONS) and not is_hidden(os.path.relpath(path, folder))

    items = make_dataset(folder, {c: classes.index(c) for c in found}, is_valid_file=is_image, allow_empty=True)
    empty = sorted(set(found) - {classes[label] for _, label in items})
    if empty and (items or part != "labeled"):  # (labeled/ all empty: a cold start, --init-strategy picks first)
        raise UserError(f"{folder}/{empty[0]} holds no image file (.jpg, .png, ...): add at least one, "
                        "or remove the folder")
    return classes, [os.path.relpath(p, root) for p, _ in items], [label for _, label in items]


def _walk_images(folder: str, root: str) -> list:
    """Relative paths of every image under ``folder`` (any nesting; hidden files and folders
    skipped), sorted."""
    paths = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        paths += [os.path.relpath(os.path.join(current, f), root) for f in sorted(files)
                  if has_file_allowed_extension(f, IMG_EXTENSIONS) and not is_hidden(f)]
    return sorted(paths)


@dataclass
class OwnImages:
    """The images of a ``folder:PATH`` run: ``classes``, the pool ``paths`` (relative to ``root``;
    labeled/ first, then unlabeled/) with their ``labels`` (a class, UNLABELED or SET_ASIDE), the
    cycle whose answers gave each label (``labeled_in``; -1: labeled/ at the start, None: not
    labeled) and the cycle whose query asked for it (``queried_in``); the optional test images."""

    root: str
    classes: list
    paths: list
    labels: np.ndarray
    labeled_in: list
    queried_in: list
    test_paths: list
    test_labels: list

    @property
    def initial_idx(self) -> np.ndarray:
        return np.flatnonzero([c == -1 for c in self.labeled_in])

    def absolute(self, paths: list) -> list:
        return [os.path.join(self.root, p) for p in paths]

    def label_name(self, code: int) -> str:
        return {UNLABELED: "", SET_ASIDE: UNKNOWN}.get(int(code), None) if code < 0 else self.classes[int(code)]


def scan(root: str, fresh: bool = True) -> OwnImages:
    """List ``root``'s labeled/, unlabeled/ and test/ images (see the module docstring); a run
    that is not ``fresh`` may have an empty unlabeled/ (its images were answered)."""
    for part in ("labeled", "unlabeled"):
        if not os.path.isdir(os.path.join(root, part)):
            raise UserError(f"folder:{root} needs {os.path.join(root, part)}/ (labeled/<class>/ for the images "
                            "labeled so far, unlabeled/ for the pool); see the README's 'Label your own images'")
    classes, labeled, labels = class_folders(root, "labeled")
    if UNKNOWN in classes:
        raise UserError(f"{os.path.join(root, 'labeled', UNKNOWN)}: '{UNKNOWN}' marks images of none of the classes "
                        "and cannot be a class; rename the folder")
    if len(classes) < 2:
        raise UserError(f"{os.path.join(root, 'labeled')} has {len(classes)} class folder(s); give at least two")
    pool = _walk_images(os.path.join(root, "unlabeled"), root)
    if not pool and fresh:
        raise UserError(f"{os.path.join(root, 'unlabeled')} holds no image file (.jpg, .png, ...): put the images "
                        "to label there")
    test_paths, test_labels = [], []
    if os.path.isdir(os.path.join(root, "test")):
        _, test_paths, test_labels = class_folders(root, "test", classes)
    return OwnImages(root, classes, labeled + pool, np.asarray(labels + [UNLABELED] * len(pool), dtype=np.int64),
                     [-1] * len(labeled) + [None] * len(pool), [None] * (len(labeled) + len(pool)),
                     test_paths, test_labels)


# ----------------------------------------------------------------------------- the run's image list

def manifest_path(out: str) -> str:
    return os.path.join(out, "images.csv")


def write_manifest(out: str, images: OwnImages) -> None:
    rows = [[i, path, images.label_name(label), "" if given is None else ("initial" if given == -1 else given),
             "" if asked is None else asked]
            for i, (path, label, given, asked) in enumerate(zip(images.paths, images.labels, images.labeled_in,
                                                                images.queried_in))]
    write_text(manifest_path(out), _csv_text(MANIFEST_COLUMNS, rows))


def _moved_to(root: str) -> dict:
    """basename -> relative paths under labeled/<class>/ and unknown/ (where answered images go)."""
    found = {}
    for part in ("labeled", UNKNOWN):
        for path in _walk_images(os.path.join(root, part), root):
            found.setdefault(os.path.basename(path), []).append(path)
    return found


def _relocate(root: str, rel: str, moved: dict, taken: set) -> list:
    """Where image ``rel`` is now: itself if the file is there, else the files of its name under
    labeled/ and unknown/ that belong to no other image of the run."""
    if os.path.isfile(os.path.join(root, rel)):
        return [rel]
    return [p for p in moved.get(os.path.basename(rel), []) if p not in taken]


def read_manifest(out: str, root: str, scanned: OwnImages) -> OwnImages:
    """The image list of the run in ``out`` (see :func:`write_manifest`), with each image found
    where it is now (an image moved into labeled/<class>/ or unknown/ keeps its index)."""
    path = manifest_path(out)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise UserError(f"--resume: cannot read {path} ({exc}); it lists this run's images: restore it or "
                        "start a new --out") from None
    if not rows or list(rows[0]) != MANIFEST_COLUMNS:
        raise UserError(f"--resume: {path} is not this project's image list (columns {', '.join(MANIFEST_COLUMNS)})")
    classes = scanned.classes
    moved, taken = _moved_to(root), {row["path"] for row in rows}
    paths, labels, labeled_in, queried_in = [], [], [], []
    for row in rows:
        rel = row["path"]
        places = _relocate(root, rel, moved, taken)
        if len(places) != 1:
            where = "is gone" if not places else f"is in {len(places)} places ({', '.join(places)})"
            raise UserError(f"image {rel} of this run {where}: put it back, or start a new --out")
        rel = places[0]
        name = row["label"]
        if name and name != UNKNOWN and name not in classes:
            raise UserError(f"{path}: class {name!r} of {rel} is not a class folder of {root}/labeled/ any more")
        paths.append(rel)
        labels.append(SET_ASIDE if name == UNKNOWN else classes.index(name) if name else UNLABELED)
        given = row["labeled_in"]
        labeled_in.append(-1 if given == "initial" else int(given) if given else None)
        queried_in.append(int(row["queried_in"]) if row["queried_in"] else None)
    new = sorted(set(_walk_images(os.path.join(root, "unlabeled"), root)) - set(paths))
    if new:
        print(f"notice: {len(new)} image(s) under {root}/unlabeled/ came after this run started (e.g. {new[0]}) and "
              "are not in its pool; start a new --out to include them", flush=True)
    return OwnImages(root, classes, paths, np.asarray(labels, dtype=np.int64), labeled_in, queried_in,
                     scanned.test_paths, scanned.test_labels)


def load_own_images(root: str, manifest_out: str | None) -> OwnImages:
    """The images of ``folder:root``: scanned, or (resuming) the list of the run in ``manifest_out``."""
    if manifest_out and os.path.isfile(manifest_path(manifest_out)):
        return read_manifest(manifest_out, root, scan(root, fresh=False))
    return scan(root)


# ----------------------------------------------------------------------------- what the person sees

def to_label_path(out: str, cycle: int, ext: str = "csv") -> str:
    return os.path.join(out, "to_label", f"cycle{cycle}.{ext}")


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


def _csv_text(header: list, rows: list) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def read_answers(path: str, expected: list, classes: list) -> dict:
    """The labels a person filled into the query CSV ``path``, {relative path: label code}: one
    row per ``expected`` path (any order: the rows may be sorted), each label a class name or
    ``unknown``. Any problem stops with the row."""
    fix = f"fill the label column with one of {', '.join(classes)} or {UNKNOWN}"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
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

    def __init__(self, images: OwnImages, data, mode: str, poll_seconds: float = 5.0, dist=None):
        super().__init__()
        self.images, self.data, self.mode, self.poll_seconds, self.dist = images, data, mode, poll_seconds, dist
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
        self.answers = (cycle, read_answers(to_label_path(out, cycle), [self.images.paths[i] for i in indices],
                                            self.images.classes))

    def report(self, out: str, cycle: int, model, pool_idx: np.ndarray, queried: np.ndarray, batch_size: int,
               workers: int, probs: torch.Tensor | None = None) -> None:
        """After cycle ``cycle``'s query: ``predictions.csv`` (every pool image's predicted class and
        probability) and, for a query, ``to_label/cycle<C>.csv`` and ``.png``; the image list
        records the query."""
        from utils.core.train import predict, softmax_probs

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
        write_text(os.path.join(out, "predictions.csv"), _csv_text(
            ["path", "predicted", "confidence"],
            [[paths[i], n, f"{float(s):.4f}"] for i, n, s in zip(pool_idx.tolist(), names, score)]))
        if len(queried):
            at = {int(i): k for k, i in enumerate(pool_idx.tolist())}
            rows = [[paths[i], "", names[at[i]], f"{float(score[at[i]]):.4f}"] for i in queried.tolist()]
            write_text(to_label_path(out, cycle), _csv_text(TO_LABEL_COLUMNS, rows))
            images = self.data.train.__getitems__(queried.tolist())[0]
            atomic_write(to_label_path(out, cycle, "png"), lambda fh: contact_sheet(images).save(fh, format="PNG"))
        write_manifest(out, self.images)

    def instructions(self, out: str, cycle: int, count: int) -> str:
        classes = ", ".join(self.images.classes)
        if self.mode == "human":
            sheet = to_label_path(out, cycle, "png")
            return (f"label the {count} images of {to_label_path(out, cycle)} (pictures: {sheet}): fill the label "
                    f"column with {classes} or {UNKNOWN}, then run the same command with --resume")
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
                raise UserError(f"no labels found for the query of cycle {cycle} in {to_label_path(out, cycle)}")
            labels = np.asarray([self.answers[1][self.images.paths[i]] for i in waiting.tolist()], dtype=np.int64)
        else:
            labels = self._watch(out, cycle, waiting)
        from utils.core.distributed import broadcast_object

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
                places = _relocate(root, rel, moved, taken)
                if len(places) > 1:
                    raise UserError(f"{os.path.basename(rel)} is in {len(places)} places ({', '.join(places)}); "
                                    "keep one")
                parts = places[0].split(os.sep) if places else ["unlabeled"]
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
