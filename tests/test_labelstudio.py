"""The Label Studio round trip of a query on own images (utils/core/labelstudio.py, utils/core/oracles.py):
the tasks and labeling configuration a query writes, and the answers read back from hand-made exports in
the JSON, JSON-MIN and CSV formats, checked as the CSV's answers are."""

import os
import xml.etree.ElementTree as ET

import pytest
from conftest import label_studio_export as export

import main_al
from utils.core.cli import run_cli
from utils.core.errors import UserError
from utils.core.labelstudio import labeling_config, read_export, tasks

CLASSES = ["cat", "dog"]
PATHS = ["unlabeled/a.png", "unlabeled/sub dir/b.png", "unlabeled/c.png"]


def test_the_tasks_carry_the_image_url_the_path_the_guess_and_the_order():
    query = tasks(PATHS, ["dog", "cat", "cat"], [0.9, 0.55, 0.7], cycle=3, run="/runs/mine")
    assert [t["data"]["rank"] for t in query] == [1, 2, 3] and [t["data"]["path"] for t in query] == PATHS
    assert query[1]["data"]["image"] == "/data/local-files/?d=unlabeled/sub%20dir/b.png"
    guess = query[0]["predictions"][0]
    assert guess["score"] == 0.9 and guess["result"][0]["value"] == {"choices": ["dog"]}
    assert guess["result"][0]["type"] == "choices" and query[0]["data"]["cycle"] == 3
    view = ET.fromstring(labeling_config(["a&b", "dog"], "unknown"))
    image, choices = view.find("Image"), view.find("Choices")
    assert image.get("value") == "$image" and choices.get("toName") == image.get("name") == "image"
    assert choices.get("name") == guess["result"][0]["from_name"]
    assert [c.get("value") for c in choices] == ["a&b", "dog", "unknown"]


@pytest.mark.parametrize("fmt", ["json", "min.json", "csv"])
def test_each_export_format_reads_back_the_latest_answer_not_cancelled(tmp_path, fmt):
    query = tasks(PATHS, ["dog", "cat", "cat"], [0.9, 0.55, 0.7], cycle=0, run="/runs/mine")
    answers = [[("cat", "2026-12-08T03:00:00Z", False), ("dog", "2026-12-08T03:05:00Z", False),
                ("cat", "2026-12-08T03:09:00Z", True)],  # the latest not cancelled: dog
               "Unknown", [("dog", "2026-12-08T03:00:00Z", False), ("cat", "2026-12-08T02:00:00Z", False)]]
    path = export(query, answers, fmt.split(".")[0], tmp_path / f"cycle0.export.{fmt.split('.')[-1]}")
    got = read_export(path, PATHS, CLASSES, "unknown", 0, "/runs/mine")
    assert got == {PATHS[0]: "dog", PATHS[1]: "unknown", PATHS[2]: "dog"}


@pytest.mark.parametrize("fmt", ["json", "min", "csv"])
@pytest.mark.parametrize("change,message", [
    (lambda q, a: (q, ["cat", "bird", "dog"]), "'bird' is not a class: choose one of cat, dog or unknown"),
    (lambda q, a: (q[:2], a[:2]), "has no task for unlabeled/c.png (1 queried image(s) missing)"),
    (lambda q, a: ([*q, q[0]], [*a, "dog"]), "unlabeled/a.png is answered by two tasks"),
    (lambda q, a: (tasks(["unlabeled/z.png", *PATHS[1:]], ["cat"] * 3, [1] * 3, 0, "/runs/mine"), a),
     "'unlabeled/z.png', which is not one of the queried images"),
    (lambda q, a: (tasks(PATHS, ["cat"] * 3, [1] * 3, 1, "/runs/mine"), a),
     "is an export of cycle 1 of the run in /runs/mine (task 1, unlabeled/a.png), not of cycle 0"),
    (lambda q, a: (tasks(PATHS, ["cat"] * 3, [1] * 3, 0, "/runs/other"), a),
     "is an export of cycle 0 of the run in /runs/other"),
    (lambda q, a: (q, [a[0], [("cat", "2026-12-08T03:00:00Z", True)], a[2]]), "has no answer (or only cancelled"),
])
def test_a_bad_export_is_refused_naming_what_is_wrong(tmp_path, fmt, change, message):
    query, answers = change(tasks(PATHS, ["dog"] * 3, [0.5] * 3, 0, "/runs/mine"), ["cat", "dog", "unknown"])
    path = export(query, answers, fmt, tmp_path / f"export.{'csv' if fmt == 'csv' else 'json'}")
    with pytest.raises(UserError, match="^" + path) as error:
        read_export(path, PATHS, CLASSES, "unknown", 0, "/runs/mine")
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1


def test_one_project_may_hold_the_whole_run(tmp_path):
    """An export of a project that got every cycle's tasks: the earlier cycles' are skipped; an export
    holding only earlier cycles is refused, naming the cycle."""
    earlier = tasks(["unlabeled/old.png"], ["cat"], [0.5], 0, "/runs/mine")
    query = tasks(PATHS, ["dog"] * 3, [0.5] * 3, 1, "/runs/mine")
    path = export([*earlier, *query], ["cat", "cat", "dog", "unknown"], "min", tmp_path / "all.json")
    assert read_export(path, PATHS, CLASSES, "unknown", 1, "/runs/mine") == dict(zip(PATHS, ["cat", "dog", "unknown"]))
    only_old = export(earlier, ["cat"], "json", tmp_path / "old.json")
    with pytest.raises(UserError, match="is an export of cycle 0 of the run in /runs/mine"):
        read_export(only_old, PATHS, CLASSES, "unknown", 1, "/runs/mine")


def test_an_unreadable_export_is_one_line(tmp_path):
    for text in ("{not json", '{"a": 1}', "[1, 2]"):
        path = tmp_path / "cycle0.export.json"
        path.write_text(text)
        with pytest.raises(UserError, match="export the project again"):
            read_export(str(path), PATHS, CLASSES, "unknown", 0, "/runs/mine")


def test_answers_is_refused_where_no_person_answers(tmp_path, capsys):
    out = str(tmp_path / "run")
    simulated = ["--protocol", "deepal", "--dataset", "digits", "--strategy", "RandomSampling", "--model", "LeNet",
                 "--data-root", str(tmp_path / "data"), "--out", out, "--quiet"]
    for argv, message in ((["--answers", "x.json"], "--answers: a person's answers to a query of own images"),
                          (["--answers", "x.json", "--resume"], "--answers: a person's answers")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda argv=argv: main_al.main([*simulated, *argv]))
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert not os.path.exists(out)


# ------------------------------------------------------------------ against a real Label Studio server

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def label_studio_binary():
    """The label-studio command: LABEL_STUDIO_BIN, else the one on PATH (it may live in its own
    environment: its pinned dependencies need not match the project's)."""
    import shutil

    return os.environ.get("LABEL_STUDIO_BIN") or shutil.which("label-studio")


@pytest.fixture
def label_studio(tmp_path):
    """A Label Studio server on localhost serving local files under tmp_path/data; yields a function
    calling its API (method, path, JSON body) -> parsed answer or raw bytes."""
    import json
    import socket
    import subprocess
    import time
    import urllib.request

    binary = label_studio_binary()
    if not binary:
        pytest.skip("label-studio is not installed (pip install label-studio, or set LABEL_STUDIO_BIN)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path / "data"),
           "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls"), "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}
    server = subprocess.Popen([binary, "start", "--no-browser", "--port", str(port), "--username", "me@example.com",
                               "--password", "labels123", "--user-token", TOKEN], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def call(method, path, body=None):
        request = urllib.request.Request(base + path, method=method, headers={
            "Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=60) as answer:
            raw = answer.read()
        return json.loads(raw) if answer.headers.get_content_type() == "application/json" else raw

    try:
        for _ in range(600):  # the first start migrates its database: minutes
            try:
                call("GET", "/health")
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("label-studio stopped while starting")
                time.sleep(1)
        else:
            pytest.fail("label-studio did not answer in 10 minutes")
        yield call
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.slow
def test_a_query_labeled_in_a_real_label_studio_comes_back(tmp_path, label_studio):
    """The run's tasks and labeling configuration are accepted by Label Studio as they are, it serves the
    images from the URLs, and each of its export formats (annotations made through its API, as a person's)
    brings the answers back into the run."""
    import json

    from own_images import make_own_images

    from utils.core.results import read_cycles

    root, out = tmp_path / "data", tmp_path / "run"
    truth = make_own_images(str(root), n_unlabeled=60, n_test=0)
    argv = ["--protocol", "deepal", "--dataset", f"folder:{root}", "--oracle", "human", "--strategy",
            "RandomSampling", "--model", "LeNet", "--n_epoch", "1", "--query-size", "4", "--out", str(out), "--quiet"]
    main_al.main(argv)
    project = label_studio("POST", "/api/projects", {
        "title": "mine", "label_config": (out / "to_label" / "labeling_config.xml").read_text()})["id"]
    label_studio("POST", "/api/storages/localfiles", {"project": project, "path": str(root / "unlabeled"),
                                                      "title": "images", "use_blob_urls": False})
    for cycle, fmt in enumerate(["JSON", "JSON_MIN", "CSV"]):
        query = json.loads((out / "to_label" / f"cycle{cycle}.tasks.json").read_text())
        imported = label_studio("POST", f"/api/projects/{project}/import", query)
        assert imported["task_count"] == 4 and imported["prediction_count"] == 4
        assert label_studio("GET", query[0]["data"]["image"]) == (root / query[0]["data"]["path"]).read_bytes()
        listed = label_studio("GET", f"/api/tasks?project={project}&page_size=100")
        for task in listed["tasks"] if isinstance(listed, dict) else listed:
            if task["data"]["cycle"] == cycle:
                name = truth[task["data"]["path"]]
                label_studio("POST", f"/api/tasks/{task['id']}/annotations", {"result": [
                    {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [name]}}]})
        exported = label_studio("GET", f"/api/projects/{project}/export?exportType={fmt}")
        ext = "csv" if fmt == "CSV" else "json"
        raw = exported if isinstance(exported, bytes) else json.dumps(exported).encode()
        (out / "to_label" / f"cycle{cycle}.export.{ext}").write_bytes(raw)
        main_al.main([*argv, "--resume"])
    assert [r["n_labeled"] for r in read_cycles(str(out))] == [20, 24, 28, 32]
    rows = [line.split(",") for line in (out / "images.csv").read_text().splitlines()[1:]]
    given = {r[1]: r[2] for r in rows if r[3] in ("0", "1", "2")}
    assert len(given) == 12 and all(truth[p] == name for p, name in given.items())
