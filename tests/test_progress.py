"""Progress of long stages: off a terminal, plain lines at most every PROGRESS_PERIOD seconds for training
(per epoch and per batch) and pool scoring (predict); nothing with --quiet or on a short stage. A fake clock
(utils.core.progress.clock) stands in for time, so nothing sleeps."""

import re
import sys
import time

import pytest
import torch
from conftest import TinyNet, tiny_data

from utils.core import progress
from utils.core.data import make_loader
from utils.core.distributed import Dist
from utils.core.loop import Run
from utils.core.train import evaluate, fit, predict, softmax_probs
from utils.samplers.mc_dropout import mc_dropout_probs

pytestmark = pytest.mark.usefixtures("one_thread")

IDENTITY = {"script": "x.py", "SEED": 0}
NUMBER = r"\d+(?:\.\d+)?(?:e-\d+)?"
DURATION = r"(?:\d+h\d\dm|\d+m\d\ds|\d+s)"
TRAIN_LINE = re.compile(rf"^\[trial0/cycle2\] train epoch (\d)/2(?: batch (\d)/4)? \((\d+)%\) loss ({NUMBER}) "
                        rf"lr ({NUMBER}) elapsed ({DURATION}) eta ({DURATION})$")
SCORE_LINE = re.compile(rf"^\[(query|test)\] scoring ([\d,]+)/60 images \((\d+)%\) elapsed ({DURATION}) "
                        rf"eta ({DURATION})$")


def fake_clock(monkeypatch, step):
    """The progress clock advances ``step`` seconds at every reading."""
    now = [1000.0]

    def clock():
        now[0] += step
        return now[0]

    monkeypatch.setattr(progress, "clock", clock)


@pytest.fixture
def not_a_tty(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)


def tiny_fit(run, epochs=2):
    data = tiny_data()
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = make_loader(data.train, data.train_idx, 16, shuffle=True)  # 60 images: 4 batches

    def step(batch):
        loss = torch.nn.functional.cross_entropy(model(data.train_transform(batch.images.float())).logits,
                                                 batch.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    fit(loader, epochs, step, run, "trial0/cycle2", optimizer=optimizer)
    return model, data


def lines(out, pattern):
    return [m for m in map(pattern.match, out.splitlines()) if m]


def test_a_long_fit_prints_periodic_lines_per_batch_and_epoch(tmp_path, monkeypatch, capsys, not_a_tty):
    fake_clock(monkeypatch, 31.0)
    run = Run(str(tmp_path / "run"), {"settings": IDENTITY}, IDENTITY)
    try:
        tiny_fit(run)
    finally:
        run.close()
    out = capsys.readouterr().out
    train = lines(out, TRAIN_LINE)
    assert len(train) == 2 * (4 + 1), out  # every batch and every epoch's end: 31 s apart each
    batch_lines = [m for m in train if m.group(2)]
    assert [(m.group(1), m.group(2)) for m in batch_lines] == [(str(e), str(b)) for e in (1, 2) for b in (1, 2, 3, 4)]
    assert [int(m.group(3)) for m in batch_lines] == [12, 25, 38, 50, 62, 75, 88, 100]
    assert all(0 < float(m.group(4)) < 10 and float(m.group(5)) == 0.1 for m in train)
    assert train[0].group(6) == "31s" and train[0].group(7) == "3m37s"  # 1/8 done after 31 s: 7 x 31 s to go
    assert train[-1].group(0).startswith("[trial0/cycle2] train epoch 2/2 (100%)") and train[-1].group(7) == "0s"
    assert train[-1].group(6) == "5m10s"  # the 10th reading after the start


def test_quiet_prints_neither_lines_nor_bars(tmp_path, monkeypatch, capsys):
    fake_clock(monkeypatch, 31.0)
    for tty in (False, True):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        run = Run(str(tmp_path / f"run{tty}"), {"settings": IDENTITY}, IDENTITY, quiet=True)
        try:
            model, data = tiny_fit(run)
            predict(model, data, data.train_idx, softmax_probs, 8, Dist())
            evaluate(model, data, 8, Dist())
        finally:
            run.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_long_predict_prints_scoring_lines(tmp_path, monkeypatch, capsys, not_a_tty):
    data, model = tiny_data(), TinyNet().eval()
    plain = predict(model, data, data.train_idx, softmax_probs, 8, Dist())  # no Run: silent
    fake_clock(monkeypatch, 31.0)
    run = Run(str(tmp_path / "run"), {"settings": IDENTITY}, IDENTITY)
    try:
        reported = predict(model, data, data.train_idx, softmax_probs, 8, Dist())
        mc_dropout_probs(model, data, data.train_idx, 3, 16, Dist(), consistent=False)
        evaluate(model, data, 30, Dist())
    finally:
        run.close()
    assert torch.equal(plain, reported)
    out = capsys.readouterr().out
    scoring = lines(out, SCORE_LINE)
    assert len(scoring) == 8 + 4 + 2, out  # 60 images in batches of 8, 16 (MC dropout) and 30 (test)
    first = scoring[0]
    assert first.group(0) == "[query] scoring 8/60 images (13%) elapsed 31s eta 3m22s"
    assert [m.group(2) for m in scoring[8:12]] == ["16", "32", "48", "60"]
    assert [m.group(0).split(" (")[0] for m in scoring[12:]] == ["[test] scoring 30/60 images",
                                                                 "[test] scoring 60/60 images"]
    assert scoring[-1].group(3) == "100" and scoring[-1].group(5) == "0s"
    predict(model, data, data.train_idx, softmax_probs, 8, Dist())  # a closed Run reports no more
    assert capsys.readouterr().out == ""


def test_a_short_stage_prints_no_line(tmp_path, monkeypatch, capsys, not_a_tty):
    fake_clock(monkeypatch, 0.0)
    run = Run(str(tmp_path / "run"), {"settings": IDENTITY}, IDENTITY)
    try:
        model, data = tiny_fit(run)
        predict(model, data, data.train_idx, softmax_probs, 8, Dist())
        monkeypatch.setattr(progress, "PROGRESS_PERIOD", 10_000.0)  # a real clock, a period no test reaches
        monkeypatch.setattr(progress, "clock", time.monotonic)
        tiny_fit(run)
    finally:
        run.close()
    assert capsys.readouterr().out == ""


def test_the_period_is_a_setting(tmp_path, monkeypatch, capsys, not_a_tty):
    fake_clock(monkeypatch, 31.0)
    monkeypatch.setattr(progress, "PROGRESS_PERIOD", 62.0)  # every other reading
    run = Run(str(tmp_path / "run"), {"settings": IDENTITY}, IDENTITY)
    try:
        tiny_fit(run)
    finally:
        run.close()
    assert [m.group(2) for m in lines(capsys.readouterr().out, TRAIN_LINE)] == ["2", "4", "1", "3", None]


def test_on_a_terminal_the_epoch_bar_follows_the_batches(tmp_path, monkeypatch, capsys):
    fake_clock(monkeypatch, 31.0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    run = Run(str(tmp_path / "run"), {"settings": IDENTITY}, IDENTITY)
    try:
        tiny_fit(run, epochs=1)
    finally:
        run.close()
    captured = capsys.readouterr()
    assert captured.out == ""  # no plain lines on a terminal
    assert "batch=2/4" in captured.err and "batch=4/4" in captured.err


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (41, "41s"), (192, "3m12s"), (870, "14m30s"),
                                           (3725, "1h02m")])
def test_durations(seconds, text):
    assert progress._duration(seconds) == text


# ---------------------------------------------------------------------- the inner loops of slow queries
STAGE_LINE = re.compile(rf"^\[(query|label propagation)\] (DeepFool|BIM|ASAL GAN training|GCN training|CoreSet MIP|"
                        rf"kNN search|solving|jLP) (\d+)/(\d+) (iterations|steps|epochs|solves|images|classes|picks)"
                        rf"(?: \((\d+)%\))?(?: (.+?))? elapsed ({DURATION})(?: eta ({DURATION}))?$")


def ring(x):
    """Logits (|x|^2 - 1, 0): the boundary is the unit circle, which DeepFool reaches from outside in a few steps."""
    return torch.stack([x.pow(2).sum(1) - 1, torch.zeros(len(x), dtype=x.dtype)], 1)


def query_stages(monkeypatch) -> dict:
    """Every reported inner loop of a query (and label propagation) on tiny inputs: stage -> its result."""
    from types import SimpleNamespace

    import numpy as np

    from utils.methods import label_propagation
    from utils.samplers.adversarial import bim_norms, deepfool_norms
    from utils.samplers.coreset import robust_kcenter_solve
    from utils.samplers.graph import jlp_positions
    from utils.samplers.learned import train_gan, train_gcn

    monkeypatch.setattr(label_propagation, "SEARCH_CHUNK", 20)  # 60 points: 3 chunks
    results = {"DeepFool": deepfool_norms(ring, torch.tensor([[2.0, 0], [0, 3], [1.2, 0], [0, 1.4]]).double()),
               "BIM": bim_norms(ring, torch.tensor([[1.1, 0], [1.2, 0], [0, 1.3]]).double())}
    torch.manual_seed(0)
    gen = train_gan(torch.rand(16, 1, 8, 8) * 2 - 1, steps=3, batch_size=4, latent=4, lr=1e-3,
                    generator=torch.Generator().manual_seed(0), width=4)
    results["ASAL GAN training"] = list(gen.state_dict().values())
    features = torch.nn.functional.normalize(torch.rand(12, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    results["GCN training"] = train_gcn(features, torch.arange(12) < 4, hidden=4, epochs=3, seed=0)[1]
    points = torch.rand(26, 2, generator=torch.Generator().manual_seed(1))
    solution = robust_kcenter_solve(points[2:], points[:2], 3, outliers=0, max_steps=3)
    results["CoreSet MIP"] = (solution.positions, solution.radius, solution.solves)
    clusters = np.concatenate([np.array([1.0, 0, 0]) + np.random.default_rng(0).normal(0, 0.05, (30, 3)),
                               np.array([0, 1.0, 0]) + np.random.default_rng(1).normal(0, 0.05, (30, 3))])
    graph = label_propagation.knn_graph(clusters.astype(np.float32), k=5)
    results["solving"] = label_propagation.propagate(graph, [3, 45], [0, 1], num_classes=2)
    ctx = SimpleNamespace(labeled_features=lambda: torch.as_tensor(clusters[:2], dtype=torch.float32),
                          features=lambda: torch.as_tensor(clusters[2:], dtype=torch.float32),
                          dist=SimpleNamespace(device=torch.device("cpu")), query_size=3)
    results["jLP"] = jlp_positions(ctx)  # its own kNN search, reported as [query]
    return results


def assert_same(a, b):
    """Equal results: tensors and arrays element for element, sequences item by item."""
    import numpy as np

    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert np.array_equal(a, b)


def test_slow_query_stages_print_their_progress_lines(tmp_path, monkeypatch, capsys, not_a_tty):
    plain = query_stages(monkeypatch)  # no Run: silent
    assert capsys.readouterr().out == ""
    fake_clock(monkeypatch, 31.0)
    run = Run(str(tmp_path / "run"), {"settings": IDENTITY}, IDENTITY)
    try:
        reported = query_stages(monkeypatch)
    finally:
        run.close()
    for stage, result in plain.items():  # progress changes no result
        assert_same(result, reported[stage])
    out = capsys.readouterr().out
    found = lines(out, STAGE_LINE)
    assert len(found) == len(out.splitlines()), out  # every line is a stage's
    by_stage = {}
    for m in found:
        by_stage.setdefault((m.group(1), m.group(2)), []).append(m)
    assert sorted(by_stage) == sorted([("query", s) for s in ("DeepFool", "BIM", "ASAL GAN training", "GCN training",
                                                               "CoreSet MIP", "kNN search", "jLP")] +
                                      [("label propagation", "kNN search"), ("label propagation", "solving")])

    def shown(key):
        return [m.group(0).split(" elapsed ")[0] for m in by_stage[key]]

    # attacks: iterations against the cap, the images still attacked, no percentage nor eta (the cap is no estimate)
    assert shown(("query", "DeepFool")) == [f"[query] DeepFool {i}/50 iterations unflipped {k}/4 images"
                                            for i, k in ((1, 4), (2, 4), (3, 3), (4, 1))]
    bim = by_stage[("query", "BIM")]
    assert [m.group(3) for m in bim] == [str(i) for i in range(1, len(bim) + 1)] and len(bim) == 6
    assert [m.group(7) for m in bim] == ["unflipped 3/3 images"] * 3 + ["unflipped 2/3 images"] * 2 + \
        ["unflipped 1/3 images"]
    assert all(m.group(6) is None and m.group(9) is None for m in by_stage[("query", "DeepFool")] + bim)
    # counted stages: percentage and eta, the last at 100% with nothing left
    for key, total in ((("query", "ASAL GAN training"), 3), (("query", "GCN training"), 3),
                       (("query", "jLP"), 3), (("label propagation", "solving"), 2)):
        assert [m.group(3) for m in by_stage[key]] == [str(i) for i in range(1, total + 1)], key
        assert by_stage[key][-1].group(6) == "100" and by_stage[key][-1].group(9) == "0s"
    assert shown(("query", "ASAL GAN training"))[0] == "[query] ASAL GAN training 1/3 steps (33%)"
    assert shown(("query", "GCN training"))[1] == "[query] GCN training 2/3 epochs (67%)"
    assert shown(("label propagation", "kNN search")) == [f"[label propagation] kNN search {n}/60 images ({p}%)"
                                                          for n, p in ((20, 33), (40, 67), (60, 100))]
    assert [m.group(4) for m in by_stage[("query", "kNN search")]] == ["60"] * 3
    # CoreSet: solves against max_steps, the bisection's radius bracket and the time limit
    coreset = by_stage[("query", "CoreSet MIP")]
    assert [m.group(3) for m in coreset] == ["1", "2", "3"] and all(m.group(4) == "3" for m in coreset)
    assert all(re.fullmatch(rf"radius in \[{NUMBER}, {NUMBER}\] time limit 60s", m.group(7)) for m in coreset)
    assert coreset[0].group(8) == "31s" and all(m.group(9) is None for m in coreset)


def test_quiet_stages_print_nothing_and_a_terminal_gets_no_lines(tmp_path, monkeypatch, capsys):
    fake_clock(monkeypatch, 31.0)
    for quiet, tty in ((True, False), (True, True), (False, True)):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        run = Run(str(tmp_path / f"run{quiet}{tty}"), {"settings": IDENTITY}, IDENTITY, quiet=quiet)
        try:
            query_stages(monkeypatch)
        finally:
            run.close()
        captured = capsys.readouterr()
        assert captured.out == ""  # no plain lines (quiet, or bars on a terminal)
        if quiet:
            assert captured.err == ""
