"""GPU check: every entry script on a synthetic CIFAR-10, in float32 and bf16 (main_TOD.py also fp16 and channels-last).

    bash bench/gpu_check.sh                          # on a CUDA machine (finds a Python with torch)
    python bench/gpu_check.py --device cpu --quick   # a dry run of the whole check on the CPU

A synthetic CIFAR-10 (random uint8 images in torchvision's ``cifar-10-batches-py`` pickles, nothing is
downloaded) is written to a temporary --data-root. Each script then runs once per row (``--amp off`` and
``--amp bf16``, ``--amp-modes`` to change them; main_TOD.py, the paper run, adds ``--amp fp16`` on CUDA and
``--channels-last`` in float32 and bf16) in a subprocess of its own, which calls the script's ``main(argv)``
in-process, so that each run starts with fresh peak-memory statistics and module state. A run whose timed
window lasts less than ``--min-window`` seconds (default 10; 0 with --quick) is run again with more epochs per
cycle (up to twice), so that no figure comes from a short window. Per run it reports:

* images/s (training): the images that went through the training-mode, gradient-enabled forwards of the
  script's networks (counted by a forward pre-hook on every network the script passes to
  ``Precision.wrap``, i.e. ``distributed.wrap``; a network that trains on a batch counts it, so LfOSA-T's
  detector and classifier count their batches each, CCAL's views count as images: 2 per image for the
  semantic encoder, 2 x 4 rotations for the distinctive one; forward-only passes such as TOD's EMA teacher
  are not counted, their time is included), divided by the seconds of the scripts' own ``train_seconds``
  timers (the training of a cycle: its epochs, and whatever the script does inside that timer, e.g.
  active_main.py's test of each classifier; not data loading, pool scoring, testing or checkpoints), with
  a CUDA synchronise at each end, from the end of the first optimizer step on (that step carries the
  warm-up: cuDNN algorithm choice, the allocator's first growth; its images are not counted).
  contrast_main.py has no cycles: its time runs from the end of the first optimizer step to the return of
  main(), so it includes the per-epoch logging and the final checkpoint write.
* peak GPU memory: ``torch.cuda.max_memory_allocated`` over the whole run (training, pool scoring, test),
  reset before main().
* the ratio of images/s to the script's first precision (float32; above 1: faster).
* host syncs per optimizer step (CUDA): the syncs ``torch.cuda.set_sync_debug_mode("warn")`` reports over
  the first SYNC_STEPS optimizer steps (``Precision.update`` calls) of the first cycle (a little time
  included in the window).

The rows go to one summary table, printed and written to ``--summary`` (default ``gpu_check_summary.md``).
With two or more CUDA devices it also runs main_TOD.py for one cycle under ``torchrun --nproc_per_node 2``
(``--torchrun on`` forces it, e.g. on the CPU with gloo; ``off`` skips it); with one it says it skipped it.
Without CUDA and without ``--device cpu`` it prints one line and exits 0. The exit code is 1 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# ----------------------------------------------------------------------------------------------- the data

def write_cifar10(root: str, n_train: int, n_test: int, seed: int = 0) -> str:
    """A synthetic CIFAR-10 under ``root/cifar-10-batches-py``: data_batch_1..5 and test_batch pickles, each a
    dict of ``b"data"`` (N x 3072 uint8, the channel planes of 32x32 images) and ``b"labels"`` (N ints 0..9),
    as torchvision's and utils/core/data/'s readers expect. Labels cycle through the 10 classes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    parts = np.array_split(np.arange(n_train), 5)
    files = [(f"data_batch_{i + 1}", part) for i, part in enumerate(parts)] + [("test_batch", np.arange(n_test))]
    for name, part in files:
        batch = {b"batch_label": name.encode(), b"labels": [int(i % 10) for i in part],
                 b"data": rng.integers(0, 256, size=(len(part), 3072), dtype=np.uint8),
                 b"filenames": [f"{name}_{i}.png".encode() for i in part]}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return root


# ----------------------------------------------------------------------------------------------- the runs

def runs(quick: bool) -> list[dict]:
    """The runs, in order (active_main.py reads the encoders the two contrast_main.py runs of the same precision
    write: ``{encoders}`` is filled in per precision). ``quick``: CPU-sized (slim networks, fewer images).
    ``epochs``: the script's epochs flag and its epochs per cycle (scaled up when the timed window is short)."""
    width = ["--set", "WIDTH=8"] if quick else []  # the CIFAR ResNets' first stage (default 64)
    start, add = ("60", "20") if quick else ("2000", "500")
    e = 1 if quick else 2  # epochs per cycle (contrast_main.py: e + 1 epochs, its first one the warm-up)
    common = ["--quiet", "--trials", "1"]
    ccal = ["--dataset", "cifar10", "--known-classes", "0,1", "--initial-budget", "40" if quick else "400",
            "--mismatch", "0.8", "--quiet", *width]
    contrast = [*ccal, "--warmup", "0", "--batch_size", "16" if quick else "128"]
    return [
        {"name": "main_TOD.py", "module": "main_TOD", "folder": "--out",
         "epochs": ("--epochs", e),
         "argv": ["--config", "cifar10", *common, "--cycles", "2", "--set", f"START={start}",
                  "--set", f"ADDENDUM={add}", "--set", f"SUBSET={100 if quick else 2000}", *width]},
        {"name": "main_LL4AL.py", "module": "main_LL4AL", "folder": "--out", "epochs": ("--epochs", e),
         "argv": ["--config", "cifar10", *common, "--cycles", "2", "--set", f"START={start}",
                  "--set", f"ADDENDUM={add}", "--set", f"SUBSET={100 if quick else 2000}", *width]},
        {"name": "main_al.py --protocol deepal", "module": "main_al", "folder": "--out", "epochs": ("--n_epoch", e),
         "argv": ["--protocol", "deepal", "--dataset", "cifar10", "--strategy", "EntropySampling", "--model",
                  "ResNet18", *common, "--cycles", "2", "--set",
                  f"N_START={40 if not quick else 30}", "--query-size", add]},
        {"name": "main_al.py --protocol rethinking", "module": "main_al", "folder": "--out", "epochs": ("--epochs", e),
         "argv": ["--protocol", "rethinking", "--dataset", "cifar10", "--al-method", "uncertainty_entropy",
                  *common, "--al-budget", start, "--query-size", add, "--al-nb-cycles", "2"]},
        {"name": "contrast_main.py --mode senmatic", "module": "contrast_main", "folder": "--logdir",
         "epochs": ("--epoch", e + 1),
         "argv": [*contrast, "--mode", "senmatic"], "encoder": "semantic"},
        {"name": "contrast_main.py --mode feature", "module": "contrast_main", "folder": "--logdir",
         "epochs": ("--epoch", e + 1),
         "argv": [*contrast, "--mode", "feature"], "encoder": "distinctive"},
        {"name": "active_main.py", "module": "active_main", "folder": "--out", "epochs": ("--epochs", e),
         "argv": [*ccal, "--target", "10" if quick else "100", "--split", "1", "--ood_samples",
                  "2", "--set", "CLASSIFIER_SEEDS=1", "--load_feature_path", "{encoders}/distinctive/last.model",
                  "--load_senmatic_path", "{encoders}/semantic/last.model"]},
        {"name": "AL_center.py", "module": "AL_center", "folder": "--save-dir", "epochs": ("--max-epoch", e),
         "argv": ["--dataset", "cifar10", "--known-class", "5", *common, "--init-percent", "16" if quick else "40",
                  "--query-batch", add, "--max-query", "2", *width]},
        {"name": "AL_center_temperature.py", "module": "AL_center_temperature", "folder": "--save-dir",
         "epochs": ("--max-epoch", e),
         "argv": ["--dataset", "cifar10", "--known-class", "5", *common, "--init-percent", "16" if quick else "40",
                  "--query-batch", add, "--max-query", "2", "--known-T", "0.5",
                  "--unknown-T", "0.5", *width]},
    ]


# ----------------------------------------------------------------------------------------------- the child

SYNC_STEPS = 20  # optimizer steps over which host syncs are counted (CUDA's sync debug mode slows them)

def child(spec: dict) -> dict:
    """Run ``spec``'s script in this process with the counters of the module docstring; returns its numbers."""
    import importlib

    import torch

    from utils.core import loop, precision
    from utils.core.cli import run_cli
    from utils.core.distributed import unwrap

    cuda = spec["device"] == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    state = {"images": 0, "windows": [], "first_step_end": None, "images_after_first_step": 0, "steps": 0}

    def count(module, args):
        if module.training and torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor) \
                and args[0].dim() == 4 and args[0].is_floating_point():
            state["images"] += int(args[0].shape[0])
            if state["first_step_end"] is not None:
                state["images_after_first_step"] += int(args[0].shape[0])

    wrap = precision.Precision.wrap

    def counting_wrap(self, net):
        model = unwrap(net)
        if not getattr(model, "_gpu_check_counted", False):
            model.register_forward_pre_hook(count)
            model._gpu_check_counted = True
        return wrap(self, net)

    timer = loop.Run.timer

    @contextmanager
    def timing(self, times, key):
        if key != "train_seconds":
            with timer(self, times, key):
                yield
            return
        sync()
        images, start = state["images"], time.perf_counter()
        with counting_syncs(cuda and not state["windows"]):  # (the first cycle's first SYNC_STEPS steps)
            with timer(self, times, key):
                yield
        sync()
        state["windows"].append((images, start, state["images"], time.perf_counter()))

    @contextmanager
    def counting_syncs(on: bool):
        """Host syncs per optimizer step over the block's first SYNC_STEPS steps, from CUDA's sync debug mode
        (a warning per sync; ``first_step_marking`` turns it off after them)."""
        if not on:
            yield
            return
        state["sync_start"] = state["steps"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        steps = min(state["steps"] - state.pop("sync_start"), SYNC_STEPS)
        if steps:
            state["syncs_per_step"] = syncs / steps

    update = precision.Precision.update  # (once per task step: minimize calls it, LfOSA's loop too)

    def first_step_marking(self, *args, **kwargs):
        update(self, *args, **kwargs)
        state["steps"] += 1
        if "sync_start" in state and state["steps"] - state["sync_start"] == SYNC_STEPS:
            torch.cuda.set_sync_debug_mode(0)
        if state["first_step_end"] is None:
            sync()
            state["first_step_end"], state["images_at_first_step"] = time.perf_counter(), state["images"]

    precision.Precision.wrap, loop.Run.timer = counting_wrap, timing
    precision.Precision.update = first_step_marking
    argv = [*spec["argv"], spec["epochs"][0], str(spec["epochs"][1]), "--device", spec["device"], "--amp", spec["amp"],
            *(["--channels-last"] if spec["channels_last"] else []), "--data-root", spec["data_root"], spec["folder"],
            spec["out"]]
    module = importlib.import_module(spec["module"])
    if cuda:
        torch.zeros(1, device="cuda")  # the CUDA context, before the peak statistics
        torch.cuda.reset_peak_memory_stats()
    wall = time.perf_counter()
    code = 0
    try:
        run_cli(lambda: module.main(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sync()
    end = time.perf_counter()
    result = {"code": code, "wall_seconds": end - wall,
              "peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None}
    marked = state["first_step_end"]
    if state["windows"] and marked is not None:  # every cycle's training after the first optimizer step
        images = seconds = 0
        for n0, t0, n1, t1 in state["windows"]:
            if t1 >= marked:
                n0, t0 = (state["images_at_first_step"], marked) if t0 < marked else (n0, t0)
                images, seconds = images + n1 - n0, seconds + t1 - t0
        result["images"], result["train_seconds"] = images, seconds
        result["timed"] = f"train_seconds of {len(state['windows'])} cycle(s) after the first optimizer step"
    elif marked is not None:
        result["images"], result["train_seconds"] = state["images_after_first_step"], end - state["first_step_end"]
        result["timed"] = "first optimizer step's end to main()'s return"
    if result.get("train_seconds"):
        result["images_per_s"] = result["images"] / result["train_seconds"]
    if "syncs_per_step" in state:
        result["syncs_per_step"] = state["syncs_per_step"]
    return result


def run_child(spec: dict, log_path: str, threads: int | None) -> dict:
    """``spec`` in a fresh Python (``--child``); its output goes to ``log_path``."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    result_path = log_path + ".json"
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec), result_path],
                              cwd=spec["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode or not os.path.exists(result_path):
        return {"code": proc.returncode or 1}
    with open(result_path) as fh:
        return json.load(fh)


def last_lines(path: str, n: int = 4) -> str:
    with open(path, errors="replace") as fh:
        return " | ".join(line.strip() for line in fh.read().strip().splitlines()[-n:])


# ----------------------------------------------------------------------------------------------- torchrun

def torchrun_smoke(work: str, data_root: str, device: str, quick: bool, threads: int | None) -> tuple[bool, str]:
    """main_TOD.py, 1 cycle, 2 processes under torchrun (bf16 on CUDA, float32 on the CPU)."""
    out, log_path = os.path.join(work, "torchrun_TOD"), os.path.join(work, "torchrun_TOD.log")
    amp = "bf16" if device == "cuda" else "off"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               os.path.join(ROOT, "main_TOD.py"), "--config", "cifar10", "--quiet", "--trials", "1", "--cycles", "1",
               "--epochs", "1", "--set", "START=60" if quick else "START=2000", "--set", "ADDENDUM=20",
               "--set", "SUBSET=100", *(["--set", "WIDTH=8"] if quick else []), "--device", device, "--amp", amp,
               "--data-root", data_root, "--out", out]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["OMP_NUM_THREADS"] = str(threads or 1)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    rows = os.path.exists(os.path.join(out, "cycles.csv"))
    with open(log_path, errors="replace") as fh:
        two = "2 process(es)" in fh.read()
    ok = proc.returncode == 0 and rows and two
    what = f"2 processes, --amp {amp}, 1 cycle: {seconds:.1f} s wall" if ok else \
        (f"FAILED (exit {proc.returncode}, cycles.csv {'written' if rows else 'missing'}, 2 processes "
         f"{'seen' if two else 'not seen'}): {last_lines(log_path)}")
    return ok, what


# ----------------------------------------------------------------------------------------------- main

def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def variants(run: dict, modes: list[str], device: str) -> list[tuple[str, bool]]:
    """(amp, channels_last) of ``run``'s rows: every precision of ``modes``; main_TOD.py (the paper run) adds
    fp16 (on CUDA) and channels-last rows, float32 and bf16."""
    rows = [(m, False) for m in modes]
    if run["module"] == "main_TOD":
        extra = ([("fp16", False)] if device == "cuda" else []) + [("off", True), ("bf16", True)]
        rows += [r for r in extra if r not in rows and (r[0] in modes or r[0] == "fp16")]
    return rows


def label(amp: str, channels_last: bool) -> str:
    return ("fp32" if amp == "off" else amp) + (" + channels-last" if channels_last else "")


def measured(run: dict, amp: str, channels_last: bool, epochs: int, args, work: str, data_root: str) -> dict:
    """One run of ``run`` with ``epochs`` per cycle (a fresh process); rerun with more epochs while its timed
    window is shorter than ``--min-window`` seconds (at most twice). ``result["epochs"]``: the epochs used."""
    flag = run["epochs"][0]
    encoders = os.path.join(work, f"encoders_{amp}{'_cl' if channels_last else ''}")
    tag = f"{run['name'].replace(' ', '_').replace('-', '')}_{amp}{'_cl' if channels_last else ''}"
    out = os.path.join(encoders, run["encoder"]) if "encoder" in run else os.path.join(work, "results", tag)
    for _attempt in range(3):
        shutil.rmtree(out, ignore_errors=True)
        spec = {"module": run["module"], "argv": [a.replace("{encoders}", encoders) for a in run["argv"]],
                "epochs": (flag, epochs), "folder": run["folder"], "out": out, "device": args.device, "amp": amp,
                "channels_last": channels_last, "data_root": data_root, "cwd": work}
        log_path = os.path.join(work, f"{tag}.log")
        result = run_child(spec, log_path, args.threads)
        result["epochs"] = epochs
        if result.get("code"):
            result["error"] = last_lines(log_path)
            return result
        window = result.get("train_seconds") or 0.0
        if window >= args.min_window or window <= 0:
            return result
        epochs = epochs * min(50, math.ceil(1.15 * args.min_window / window))
    return result


def summary(selected: list, results: dict, modes: list[str], device: str) -> list[str]:
    """The markdown table of every row: images/s, peak memory, speed against the script's float32 row (or the
    first precision), host syncs per step, the timed window."""
    lines = ["| script | precision | images/s | peak MB | x " + label(modes[0], False) + " | syncs/step | window s |"
             " epochs/cycle |", "|---|---|---|---|---|---|---|---|"]
    for run in selected:
        base = results.get((run["name"], modes[0], False), {}).get("images_per_s")
        for amp, channels_last in variants(run, modes, device):
            r = results[(run["name"], amp, channels_last)]
            speed = None if r.get("code") else r.get("images_per_s")
            lines.append(f"| {run['name']} | {label(amp, channels_last)} | "
                         f"{fmt(speed, ',.0f') if not r.get('code') else 'FAILED'} | {fmt(r.get('peak_mb'), ',.0f')} | "
                         f"{fmt(speed / base, '.2f') if speed and base else '-'} | "
                         f"{fmt(r.get('syncs_per_step'), '.1f')} | {fmt(r.get('train_seconds'), '.1f')} | "
                         f"{r.get('epochs', '-')} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="CPU-sized runs: slim networks, fewer images and epochs")
    parser.add_argument("--amp-modes", default="off,bf16", help="precisions to run, the first is the reference "
                                                                "(default off,bf16; fp16 needs CUDA)")
    parser.add_argument("--scripts", default=None, help="comma-separated substrings: only the runs whose name "
                                                        "contains one (active_main.py needs the contrast_main runs)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="synthetic training images (default 5000, --quick 300; test: a fifth, at least 60)")
    parser.add_argument("--min-window", type=float, default=None,
                        help="seconds a run's timed window must last; a shorter one is rerun with more epochs per "
                             "cycle (default 10, --quick 0)")
    parser.add_argument("--summary", default="gpu_check_summary.md", help="the file the summary table goes to")
    parser.add_argument("--torchrun", choices=["auto", "on", "off"], default="auto",
                        help="the 2-process torchrun smoke run: auto = when there are >= 2 CUDA devices")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: inherited)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, results, logs)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child(json.loads(args.child[0]))
        with open(args.child[1], "w") as fh:
            json.dump(result, fh)
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}): nothing checked; `python bench/gpu_check.py --device cpu --quick` "
              "is the CPU dry run")
        return 0
    if args.min_window is None:
        args.min_window = 0.0 if args.quick else 10.0
    modes = [m.strip() for m in args.amp_modes.split(",") if m.strip()]
    n_train = args.train_images or (300 if args.quick else 5000)
    work = tempfile.mkdtemp(prefix="gpu_check_")
    data_root = write_cifar10(os.path.join(work, "data"), n_train, max(60, n_train // 5))
    if args.device == "cuda":
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        where = f"{torch.cuda.device_count()} CUDA device(s): {names}"
    else:
        where = f"CPU, {args.threads or os.environ.get('OMP_NUM_THREADS') or torch.get_num_threads()} thread(s)"
    print(f"gpu_check: {where}; {sys.executable}, torch {torch.__version__} (CUDA build "
          f"{torch.version.cuda or 'none'}); synthetic CIFAR-10 of {n_train} training images in {data_root}; "
          f"precisions {', '.join(modes)}; timed windows of at least {args.min_window:g} s"
          + (" (--quick)" if args.quick else ""), flush=True)

    selected = runs(args.quick)
    if args.scripts:
        wanted = [s.strip() for s in args.scripts.split(",")]
        selected = [r for r in selected if any(w in r["name"] for w in wanted)]
    results, failed = {}, False
    for run in selected:
        epochs = run["epochs"][1]  # (a script's later rows start from the epochs its first row needed)
        for amp, channels_last in variants(run, modes, args.device):
            result = measured(run, amp, channels_last, epochs, args, work, data_root)
            epochs = result["epochs"]
            failed = failed or bool(result.get("code"))
            results[(run["name"], amp, channels_last)] = result
            status = "ok" if not result.get("code") else f"FAILED: {result['error']}"
            print(f"  {run['name']} {label(amp, channels_last)}: {fmt(result.get('images_per_s'), '.1f')} images/s "
                  f"({result.get('images', '-')} images in {fmt(result.get('train_seconds'), '.2f')} s; "
                  f"{result.get('timed', '-')}; {result.get('epochs')} epoch(s)/cycle), peak "
                  f"{fmt(result.get('peak_mb'), '.0f')} MB, syncs/step {fmt(result.get('syncs_per_step'), '.1f')}, "
                  f"wall {fmt(result.get('wall_seconds'), '.1f')} s: {status}", flush=True)

    table = summary(selected, results, modes, args.device)
    print("\n" + "\n".join(table))
    devices = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.torchrun == "on" or (args.torchrun == "auto" and devices >= 2):
        ok, what = torchrun_smoke(work, data_root, args.device, args.quick, args.threads)
        failed = failed or not ok
        smoke = f"torchrun smoke (main_TOD.py): {what}"
    else:
        smoke = f"torchrun smoke: skipped ({devices} CUDA device(s); it needs two, or --torchrun on)"
    print(smoke)
    with open(args.summary, "w") as fh:
        fh.write(f"# gpu_check: {where}; torch {torch.__version__}\n\n" + "\n".join(table) + f"\n\n{smoke}\n")
    print(f"summary table written to {os.path.abspath(args.summary)}")
    if args.keep or failed:
        print(f"logs, data and results kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("gpu_check: " + ("FAILED (see above)" if failed else "every run passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
