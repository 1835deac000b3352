"""Dataset configs for main_TOD.py and main_LL4AL.py, one module per dataset.

Each module holds plain upper-case values (TOD's own keys, spec A.2, plus ours: MODEL, WIDTH,
PRETRAINED, IMAGE_SIZE). ``load_config`` reads one and applies command-line overrides.
"""

import importlib
import pkgutil

from utils.core.cli import UserError, parse_overrides

DEFAULTS = {
    "MODEL": "resnet18",  # resnet18 | resnet34 (CIFAR form) | imagenet_resnet18
    "WIDTH": 64,  # channels of the first ResNet stage (CIFAR form)
    "PRETRAINED": None,  # ImageNet weights for imagenet_resnet18
    "IMAGE_SIZE": 32,  # side length folder:PATH images are resized to
}


# one paper's defaults, read by its own scripts; not dataset configs of main_TOD.py/main_LL4AL.py
PAPER_CONFIGS = ("ccal", "deepal", "lfosa", "rethinking")


def list_configs():
    """The dataset configs (``--config``) of main_TOD.py and main_LL4AL.py."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in PAPER_CONFIGS)


def load_config(name, overrides=None):
    """The config ``name`` (a dataset config or one of PAPER_CONFIGS) as a dict, with ``overrides``
    (upper-case keys) applied."""
    if name not in list_configs() and name not in PAPER_CONFIGS:
        raise UserError(f"unknown config {name!r}; choose from {', '.join(list_configs())}")
    module = importlib.import_module(f"config.{name}")
    cfg = dict(DEFAULTS)
    cfg.update({k: v for k, v in vars(module).items() if k.isupper()})
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise UserError(f"--set {key}: config {name} has no such key; keys: {', '.join(sorted(cfg))}")
        cfg[key] = value
    return cfg


def config_from_args(args):
    """``--config`` with ``--set KEY=VALUE`` and the common ``--epochs/--cycles/--trials`` applied."""
    overrides = parse_overrides(args.overrides)
    for flag, key in (("epochs", "EPOCH"), ("cycles", "CYCLES"), ("trials", "TRIALS")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    cfg = load_config(args.config, overrides)
    for key in ("EPOCH", "CYCLES", "TRIALS", "BATCH", "START", "ADDENDUM", "SUBSET"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise UserError(f"{key} must be a positive integer, got {cfg[key]!r}")
    return cfg
