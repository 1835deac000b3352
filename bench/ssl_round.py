"""Per-round cost of each --ssl method against supervised training, on a CIFAR-shaped pool.

    python bench/ssl_round.py [--pool 2000] [--labeled-percent 10] [--epochs 1]

Writes a synthetic CIFAR-10 (bench/gpu_check.py's writer) to a temporary folder and runs
``main_al.py --protocol deepal --model ResNet18 --strategy RandomSampling`` for one round with each
``--ssl`` at the toolkit's settings (its per-method batches, mu and steps per epoch), in this process,
reading the round's ``train_seconds`` from cycles.csv. A round has the same number of epochs whatever
the method, so the ratio per epoch is the ratio per round (an early stop aside: it is off here, so
every method runs its epochs). Each method's steps and images per epoch are printed with the times.
"""

import argparse
import csv
import math
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from gpu_check import write_cifar10  # noqa: E402

METHODS = ("none", "pseudolabel", "fixmatch", "flexmatch", "uda", "mixmatch")
VIEWS = {"pseudolabel": 1}  # unlabeled views in a step's training forward (the others: weak + strong, or two)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000, help="training images (default 2000)")
    parser.add_argument("--labeled-percent", type=float, default=10.0, help="--nStart (default 10)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the round (default 1)")
    args = parser.parse_args(argv)

    import torch

    import main_al
    from utils.methods.ssl import make_ssl

    rows = []
    with tempfile.TemporaryDirectory() as work:
        root = write_cifar10(os.path.join(work, "data"), args.pool, 100)
        for method in METHODS:
            out = os.path.join(work, method)
            argv = ["--protocol", "deepal", "--dataset", "cifar10", "--model", "ResNet18", "--strategy",
                    "RandomSampling", "--nStart", str(args.labeled_percent), "--n_epoch", str(args.epochs),
                    "--cycles", "1", "--quiet", "--data-root", root, "--out", out, "--ssl", method,
                    *([] if method in ("none", "mixmatch") else ["--set", "SSL_EARLY_STOP=0"])]
            main_al.main(argv)
            with open(os.path.join(out, "cycles.csv")) as fh:
                row = next(csv.DictReader(fh))
            labeled, seconds = int(row["n_labeled"]), float(row["train_seconds"]) / args.epochs
            cfg = main_al.parse_args(argv)[1]
            ssl = make_ssl(cfg, method, 10, args.pool - labeled, torch.device("cpu"))
            if ssl is None:  # supervised: one pass over L
                steps, images = math.ceil(labeled / cfg.BATCH_SIZE), labeled
            else:  # the method's own batches and steps, as the round used them
                steps = ssl.steps_per_epoch(labeled, args.pool)
                images = steps * (ssl.batch_size + VIEWS.get(method, 2) * ssl.unlabeled_batch_size)
            rows.append((method, steps, images, seconds))
    base = rows[0][3]
    print(f"\n{args.pool} CIFAR-shaped images, {labeled} labeled, slim ResNet-18, per epoch of the round:")
    print(f"{'--ssl':<12} {'steps':>6} {'images':>8} {'seconds':>8} {'x supervised':>13}")
    for method, steps, images, seconds in rows:
        print(f"{method:<12} {steps:>6} {images:>8,} {seconds:>8.2f} {seconds / base:>12.1f}x")


if __name__ == "__main__":
    main()
