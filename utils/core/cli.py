"""Command-line plumbing shared by every entry script: the common flags, the flags of the settings
trees, --set/--list-settings, one-line errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from utils.core.config import Settings, Tree, read_settings_file, resolve
from utils.core.errors import UserError, one_line


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The run-control flags every entry script shares (the common flags that are settings, such
    as --epochs and --seed, are declared by the settings trees: see add_setting_flags)."""
    group = parser.add_argument_group("common")
    group.add_argument("--data-root", default="./data", type=path, help="dataset root (default ./data)")
    group.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    group.add_argument("--out", default=None, type=path, help="results folder (default: a name under results/ "
                       "made from the script and its settings)")
    group.add_argument("--resume", nargs="?", const=True, default=False, type=str2bool,
                       help="continue the run in --out from its last finished cycle (default: a new run)")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="auto: CUDA when there is a device, else the CPU (default auto)")
    group.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off",
                       help="mixed precision for training and pool scoring: bf16 (CPU or CUDA) or fp16 (CUDA, with "
                            "loss scaling); losses and scores stay float32 (default off: the papers' float32)")
    group.add_argument("--channels-last", action="store_true",
                       help="keep convolutional weights and inputs channels-last (NHWC) (default: off)")
    group.add_argument("--workers", type=count, default=None,
                       help="data-loader worker processes (default: 0 when the images fit in memory, else up to 4)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="change a setting, e.g. --set START=100 (repeatable; see --list-settings; default: none)")
    group.add_argument("--config-file", default=None, type=path, metavar="FILE.yaml",
                       help="read settings from a YAML file of KEY: value lines (the keys of --list-settings; a "
                            "run's <out>/settings.yaml repeats it); flags and --set override it (default: none)")
    group.add_argument("--list-settings", action="store_true",
                       help="print every setting with its value and comment, and exit")
    # torch.distributed.launch passes --local_rank (old) or --local-rank (torch >= 2.0).
    group.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                       help=argparse.SUPPRESS)
    return parser


SETTING = "setting:"  # argparse dest prefix of the flags that set a key


def add_setting_flags(parser: argparse.ArgumentParser, tree: Tree) -> None:
    """One option per flag of every key of ``tree`` (synonyms written ``--arch|-a``); values stay
    raw strings here and are typed by the settings resolution, so every source of a value is
    checked the same way."""
    group = parser.add_argument_group(f"{tree.script} settings")
    if tree.owners:
        parser.add_argument_group("the query strategies' own settings (--set KEY=VALUE; the run's strategy "
                                  "reads its own, a key of another strategy is refused)",
                                  strategy_settings_help(tree).replace("%", "%%"))
    for key, key_def in tree.keys.items():
        for flag in key_def.flags:
            names = flag.split("|")
            default = key_def.default
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            kwargs = {"dest": SETTING + names[0], "default": argparse.SUPPRESS, "metavar": key,
                      "help": f"{key_def.help} (setting {key}; default {shown})".replace("%", "%%")}
            if key_def.switch:
                kwargs.update(action="store_const", const="True")
                del kwargs["metavar"]
            else:
                kwargs["nargs"] = key_def.nargs
                if key_def.choices:
                    kwargs["metavar"] = "{" + ",".join(dict.fromkeys(map(str, key_def.names().values()))) + "}"
            group.add_argument(*names, **kwargs)


def strategy_settings_help(tree: Tree) -> str:
    """The strategies' settings of ``tree`` as text: ``Strategy: KEY=default, ...; ...``."""
    by_strategy = {}
    for key, owners in tree.owners.items():
        by_strategy.setdefault(" / ".join(owners), []).append(f"{key}={tree.keys[key].default}")
    return "; ".join(f"{owners}: {', '.join(keys)}" for owners, keys in sorted(by_strategy.items()))


def add_inert_flags(parser: argparse.ArgumentParser, flags: dict, **kwargs) -> None:
    """Seed flags accepted for compatibility that change nothing here: ``flags`` maps each to why;
    giving one prints a notice (see parse_command_line)."""
    for flag, _why in flags.items():
        parser.add_argument(*flag.split("|"), dest="inert:" + flag.split("|")[0], default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, **kwargs)
    parser.set_defaults(inert_reasons={**(parser.get_default("inert_reasons") or {}), **flags})


def add_refused_flags(parser: argparse.ArgumentParser, flags: dict, **kwargs) -> None:
    """Seed flags this implementation does not support: ``flags`` maps each to the error message."""
    for flag in flags:
        parser.add_argument(*flag.split("|"), dest="refused:" + flag.split("|")[0], default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, **kwargs)
    parser.set_defaults(refused_reasons={**(parser.get_default("refused_reasons") or {}), **flags})


def parse_command_line(parser: argparse.ArgumentParser, tree: Tree, argv: list | None = None,
                       refuse: Callable | None = None) -> tuple[argparse.Namespace, Settings]:
    """Parse ``argv`` and resolve the settings (utils/core/config.py) before anything is read or
    written; ``--list-settings`` prints them and exits 0. ``refuse(dest, value)`` decides whether a
    refused flag's value is an error (default: any value). Returns (run-control args, settings)."""
    args = parser.parse_args(argv)
    args.command = list(sys.argv[1:] if argv is None else argv)  # as given, for config.json
    given = vars(args)
    for dest, value in list(given.items()):
        if dest.startswith("refused:") and (refuse is None or refuse(dest[8:], value)):
            raise UserError(f"{dest[8:]}: {args.refused_reasons[dest[8:]]}")
    flags = {dest[len(SETTING):]: value for dest, value in given.items() if dest.startswith(SETTING)}
    file = read_settings_file(args.config_file) if args.config_file else None
    settings = resolve(tree, flags, args.overrides, file, args.config_file or "")
    if args.list_settings:
        print(settings.listing(tree.script))
        raise SystemExit(0)
    if int(os.environ.get("RANK", "0")) == 0:
        for dest in given:
            if dest.startswith("inert:"):
                print(f"notice: {dest[6:]} is accepted and changes nothing: {args.inert_reasons[dest[6:]]}",
                      flush=True)
    return args, settings


def parse_script_args(settings: Tree, description: str, argv: list | None = None, run_args: Callable | None = None,
                      refuse: Callable | None = None) -> tuple[argparse.Namespace, Settings]:
    """The command line of an entry script: the flags of its settings tree (the script's
    ``config.tree(script)``), ``run_args(parser)``'s own run-control flags, the common flags; then
    parse_command_line."""
    parser = ArgumentParser(description=f"{description}; --list-settings shows every setting")
    add_setting_flags(parser, settings)
    if run_args is not None:
        run_args(parser)
    add_common_args(parser)
    return parse_command_line(parser, settings, argv, refuse)


def file_setting(argv: list | None, key: str) -> str | None:
    """The value the ``--config-file`` of ``argv`` gives ``key`` (None: no file, or no such key), for a
    script whose settings tree depends on it (main_al.py's PROTOCOL)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config-file", type=path, default=None)
    name = first.parse_known_args(argv)[0].config_file
    value = read_settings_file(name).get(key) if name else None
    return None if value is None else str(value)


def count(text: str, least: int = 0) -> int:
    """A whole number >= ``least`` (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {least} or more, got {value}")
    return value


def positive(text: str) -> int:
    """A whole number >= 1 (argparse type)."""
    return count(text, least=1)


def path(text: str) -> str:
    """A file or folder path: not empty (argparse type)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


def str2bool(text: str) -> bool:
    """'True'/'False' (yes/no, 1/0) as the seeds' boolean flags take them."""
    value = str(text).strip().lower()
    if value in ("true", "yes", "y", "1", "t"):
        return True
    if value in ("false", "no", "n", "0", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def run_cli(main):
    """Run ``main()``; a :class:`UserError` becomes one line on stderr (line breaks in it escaped)
    and exit code 2, Ctrl-C one line and exit code 130 (what was committed stays: --resume
    continues from it)."""
    try:
        main()
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the results folder keeps every finished cycle; --resume continues", file=sys.stderr)
        sys.exit(130)
