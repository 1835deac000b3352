"""Command-line plumbing shared by every entry script: the common flags, one-line errors."""

import argparse
import ast
import sys


class UserError(Exception):
    """Bad input the user can fix; reported as one line on stderr with exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_common_args(parser, out_default=None):
    """The flags every entry script shares (DESIGN.md, 'Common flags')."""
    group = parser.add_argument_group("common")
    group.add_argument("--data-root", default="./data", help="dataset root (default ./data)")
    group.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    group.add_argument("--dataset", default=None, help="override the dataset: cifar10, cifar100, svhn, mnist, "
                       "caltech101, tinyimagenet, digits or folder:PATH")
    group.add_argument("--out", default=out_default, help="results folder")
    group.add_argument("--resume", nargs="?", const=True, default=False, type=str2bool,
                       help="continue the run in --out from its last finished cycle")
    group.add_argument("--seed", type=int, default=0, help="base random seed (trial t uses seed + t)")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    group.add_argument("--epochs", type=int, default=None, help="override the epochs per cycle")
    group.add_argument("--cycles", type=int, default=None, help="override the number of AL cycles")
    group.add_argument("--trials", type=int, default=None, help="override the number of trials")
    group.add_argument("--max-train-samples", type=int, default=None,
                       help="use a seeded class-balanced subset of the training set")
    group.add_argument("--max-test-samples", type=int, default=None,
                       help="use a seeded class-balanced subset of the test set")
    group.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set START=100 (repeatable)")
    # torch.distributed.launch passes --local_rank (old) or --local-rank (torch >= 2.0).
    group.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                       help=argparse.SUPPRESS)
    return parser


def str2bool(text):
    """'True'/'False' (yes/no, 1/0) as the seeds' boolean flags take them."""
    value = str(text).strip().lower()
    if value in ("true", "yes", "y", "1", "t"):
        return True
    if value in ("false", "no", "n", "0", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def parse_overrides(pairs):
    """``["START=100", "MILESTONES=[30]"]`` -> ``{"START": 100, "MILESTONES": [30]}``."""
    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            values[key.strip().upper()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key.strip().upper()] = text
    return values


def run_cli(main):
    """Run ``main()``; a :class:`UserError` becomes one line on stderr and exit code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
