"""Your own images as a dataset (``folder:PATH`` for main_al.py --oracle human|folder; the person who
answers is utils/core/oracles.py's AnnotatorOracle).

The layout ``folder:PATH``::

    PATH/labeled/<class>/*    the images labeled so far (at least one per class, or none at all: then
                              --init-strategy chooses the first images to label)
    PATH/unlabeled/**         the pool: any nesting, no labels
    PATH/test/<class>/*       optional: test accuracy in cycles.csv
    PATH/unknown/             (--oracle folder) where images of none of the classes go

A run lists the images once, in ``<out>/images.csv`` (its index order, every label given so far and
the cycle that asked for it), and reads that list when resumed, so indices never move when files
are added or moved.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from utils.core.cells import csv_text, read_rows
from utils.core.errors import UserError, one_line
from utils.core.results import write_text

UNKNOWN = "unknown"
UNLABELED, SET_ASIDE = -1, -2  # label codes of images without a class
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
    """Relative paths of every image under ``folder`` (any nesting, symlinks followed; hidden files
    and folders skipped), sorted. Each folder is walked once (by device and inode: a symlink loop
    ends there), and one file under two paths (a link) is refused, naming both."""
    paths, seen_dirs, seen_files = [], set(), {}
    for current, dirs, files in os.walk(folder, followlinks=True):
        if _inode(current) in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(_inode(current))
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(f for f in files if has_file_allowed_extension(f, IMG_EXTENSIONS) and not is_hidden(f)):
            path = os.path.join(current, name)
            key = _inode(path)
            if key is not None and key in seen_files:
                raise UserError(f"{one_line(seen_files[key])} and {one_line(path)} are the same image file (a link); "
                                "keep one of them")
            seen_files[key] = path
            paths.append(os.path.relpath(path, root))
    return sorted(paths)


def _inode(path: str) -> tuple | None:
    """(device, inode) of the file or folder ``path`` leads to (None: a broken link)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


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
    write_text(manifest_path(out), csv_text(MANIFEST_COLUMNS, rows))


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


def _gone(root: str, rel: str) -> str:
    """Why image ``rel`` cannot be found, and where it was looked for (one line)."""
    return (f"image {one_line(rel)} of this run is gone: it is not at {one_line(os.path.join(root, rel))}, and no "
            f"file named {one_line(os.path.basename(rel))} is under {os.path.join(root, 'labeled')}/<class>/ or "
            f"{os.path.join(root, UNKNOWN)}/")


def read_manifest(out: str, root: str, scanned: OwnImages) -> OwnImages:
    """The image list of the run in ``out`` (see :func:`write_manifest`), with each image found
    where it is now (an image moved into labeled/<class>/ or unknown/ keeps its index)."""
    path = manifest_path(out)
    try:
        with open(path, newline="") as fh:
            _, rows = read_rows(fh)
    except (OSError, csv.Error) as exc:
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
            if not places:
                raise UserError(f"{_gone(root, rel)}; put it back, or start a new --out")
            raise UserError(f"image {rel} of this run is in {len(places)} places ({', '.join(places)}): put it back, "
                            "or start a new --out")
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
