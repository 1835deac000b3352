"""Label Studio files of a query (main_al.py --oracle human on own images; utils/core/oracles.py).

After a query the run writes, beside ``to_label/cycle<C>.csv``:

* ``to_label/cycle<C>.tasks.json``: one Label Studio task per queried image, ``data`` holding
  ``image`` (a local-files URL, ``/data/local-files/?d=<path>``, the path relative to the own-images
  folder PATH, which Label Studio serves as ``LOCAL_FILES_DOCUMENT_ROOT``), ``path`` (relative to
  PATH, as in the CSV), ``rank`` (the acquisition order, 1 first), ``cycle`` and ``run`` (the results
  folder); the model's guess as a ``predictions`` entry (a ``choices`` result, its probability as
  ``score``);
* ``to_label/labeling_config.xml``: an Image and one Choices of the class names plus ``unknown``.

The answers come back as a Label Studio export: JSON (tasks with their ``annotations``: the latest one
not cancelled counts), JSON-MIN or CSV (one row per annotation, the choice under ``label``; a task's
latest row counts). :func:`read_export` checks them as the CSV's answers are checked.
"""

from __future__ import annotations

import csv
import json
import os
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from utils.core.errors import UserError

IMAGE, CHOICE = "image", "label"  # the labeling config's object and control names (JSON-MIN/CSV: columns)


def labeling_config(classes: list, unknown: str) -> str:
    """The labeling configuration: the image, its path as a header, one single choice among
    ``classes`` and ``unknown``."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in [*classes, unknown])
    return (f'<View>\n  <Header value="$path"/>\n  <Image name="{IMAGE}" value="${IMAGE}"/>\n'
            f'  <Choices name="{CHOICE}" toName="{IMAGE}" choice="single" showInline="true">\n{choices}\n'
            "  </Choices>\n</View>\n")


def tasks(paths: list, predicted: list, scores: list, cycle: int, run: str) -> list:
    """The tasks of one query: ``paths`` (relative to the own-images folder, in acquisition order)
    with the model's ``predicted`` class names and their probabilities ``scores``."""
    return [{"data": {IMAGE: "/data/local-files/?d=" + quote(path.replace(os.sep, "/"), safe="/"),
                      "path": path, "rank": rank, "cycle": cycle, "run": run},
             "predictions": [{"model_version": f"cycle{cycle}", "score": round(float(score), 6),
                              "result": [{"from_name": CHOICE, "to_name": IMAGE, "type": "choices",
                                          "value": {"choices": [name]}}]}]}
            for rank, (path, name, score) in enumerate(zip(paths, predicted, scores), start=1)]


def export_records(path: str) -> list:
    """An export as one record per task: ``{"task", "data", "choice"}`` (``choice`` None: no answer);
    several annotations of a task: the latest one not cancelled."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if path.lower().endswith(".csv"):
                return _latest(list(csv.DictReader(fh)), path)
            items = json.load(fh)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise UserError(f"cannot read the Label Studio export {path} ({exc}); export the project again "
                        "(JSON, JSON-MIN or CSV)") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise UserError(f"{path} is not a Label Studio export (a JSON list of tasks); export the project again "
                        "as JSON, JSON-MIN or CSV")
    if items and all(isinstance(item.get("data"), dict) for item in items):  # JSON: tasks with annotations
        return [{"task": item.get("id"), "data": item["data"], "choice": _annotated(item, path)} for item in items]
    return _latest(items, path)  # JSON-MIN


def _stamp(entry: dict) -> tuple:
    """When an annotation was made (its last update), then its id: the latest sorts last."""
    made = entry.get("updated_at") or entry.get("created_at") or ""
    number = entry.get("annotation_id", entry.get("id"))
    return str(made), int(number) if str(number or "").isdigit() else -1


def _annotated(task: dict, path: str) -> str | None:
    """The choice of the latest annotation of ``task`` not marked cancelled (None: none)."""
    done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not done:
        return None
    latest = max(done, key=_stamp)
    for result in latest.get("result") or []:
        if result.get("type") == "choices" and result.get("from_name") == CHOICE:
            chosen = (result.get("value") or {}).get("choices") or []
            if len(chosen) != 1:
                raise UserError(f"{path}: task {task.get('id')} ({task['data'].get('path')}) has {len(chosen)} "
                                "choices; choose one")
            return str(chosen[0])
    return None


def _latest(rows: list, path: str) -> list:
    """JSON-MIN or CSV rows (the data's keys, the choice under ``label``, one row per annotation) as
    one record per task: its latest row with a choice."""
    tasks_seen = {}
    for row in rows:
        key = row.get("id") if row.get("id") not in (None, "") else id(row)
        choice = row.get(CHOICE)
        if isinstance(choice, dict):  # (a JSON-MIN choice with several values: {"choices": [...]})
            choice = choice.get("choices")
        if isinstance(choice, list):
            if len(choice) != 1:
                raise UserError(f"{path}: task {key} ({row.get('path')}) has {len(choice)} choices; choose one")
            choice = choice[0]
        record = {"task": key, "data": row, "choice": str(choice).strip() if choice not in (None, "") else None,
                  "stamp": _stamp(row)}
        held = tasks_seen.get(key)
        newer = held is None or held["choice"] is None or record["stamp"] >= held["stamp"]
        if held is None or (record["choice"] is not None and newer):
            tasks_seen[key] = record
    return list(tasks_seen.values())


def read_export(path: str, expected: list, classes: list, unknown: str, cycle: int, run: str) -> dict:
    """The choices of the Label Studio export ``path`` of cycle ``cycle``'s tasks of ``run``: {relative
    path: class name or ``unknown``}, one per ``expected`` path. Tasks of the run's earlier cycles are
    skipped (one project may hold the whole run). A task of another run or a later cycle, an export
    with no task of this cycle, a path not queried, an image answered twice, a task without a choice,
    a name that is no class, or a queried image missing stops with one line."""
    fix = f"choose one of {', '.join(classes)} or {unknown}"
    records = export_records(path)
    mine, earlier, stray = [], [], None
    for record in records:
        number, folder = _asked(record)
        if folder == run and number == str(cycle):
            mine.append(record)
        elif folder == run and number.isdigit() and int(number) < cycle:
            earlier.append(record)
        elif stray is None:
            stray = record
    if stray is not None or not mine and earlier:
        shown = stray or earlier[0]
        number, folder = _asked(shown)
        raise UserError(f"{path} is an export of cycle {number or '?'} of the run in {folder or '?'} (task "
                        f"{shown['task']}, {shown['data'].get('path') or 'no path'}), not of cycle {cycle} of the run "
                        f"in {run}; export the project that holds to_label/cycle{cycle}.tasks.json")
    answers = {}
    wanted = set(expected)
    for record in mine:
        task, rel = record["task"], str(record["data"].get("path") or "").strip()
        if rel not in wanted:
            raise UserError(f"{path}: task {task} has the path {rel!r}, which is not one of the queried images; "
                            f"import to_label/cycle{cycle}.tasks.json unchanged")
        if rel in answers:
            raise UserError(f"{path}: {rel} is answered by two tasks; import each task once (delete the copy)")
        name = record["choice"]
        if name is None:
            raise UserError(f"{path}: task {task} ({rel}) has no answer (or only cancelled ones): {fix}")
        if name.lower() == unknown:
            name = unknown
        elif name not in classes:
            raise UserError(f"{path}: task {task} ({rel}): {name!r} is not a class: {fix}")
        answers[rel] = name
    missing = [rel for rel in expected if rel not in answers]
    if missing:
        raise UserError(f"{path} has no task for {missing[0]} ({len(missing)} queried image(s) missing): export "
                        f"every task of to_label/cycle{cycle}.tasks.json")
    return answers


def _asked(record: dict) -> tuple[str, str]:
    """(cycle, run) of an exported task, as the query's tasks wrote them."""
    data = record["data"]
    return str(data.get("cycle", "")).strip(), str(data.get("run", "")).strip()
