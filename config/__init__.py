"""Every script's settings: one tree of commented, typed keys per script (utils/core/config.py).

| script                                 | keys              | profile (values applied over the defaults)     |
|----------------------------------------|-------------------|------------------------------------------------|
| main_TOD.py, main_LL4AL.py             | config/tod.py     | the dataset config ``--config`` names          |
|                                        |                   | (config/cifar10.py, cifar100, svhn, caltech101, digits) |
| main_al.py --protocol deepal           | config/deepal.py  | the toolkit's per-dataset values               |
| main_al.py --protocol rethinking       | config/rethinking.py | the seed's per-dataset normalisation        |
| contrast_main.py, active_main.py       | config/ccal.py    |                                                |
| AL_center.py, AL_center_temperature.py | config/lfosa.py   | the seed's per-dataset normalisation           |

``python SCRIPT --list-settings`` prints a script's keys with their values and comments;
``--set KEY=VALUE`` changes any of them.
"""

import dataclasses
import importlib
from collections.abc import Iterable, Mapping

from utils.core.config import SCRIPT_EPOCHS, Key, Tree
from utils.core.data import list_datasets
from utils.core.errors import UserError

# the registered datasets (utils/core/data/datasets.py), then folder:PATH
DATASETS_HELP = ", ".join(list_datasets()[:-1]) + f" or {list_datasets()[-1]}"


def common_keys(dataset: str, seed: int, trials: int = 1) -> dict:
    """The keys every script has: the data, the seed and the number of trials."""
    return {
        "DATASET": Key(dataset, f"the dataset: {DATASETS_HELP}", flags=("--dataset",)),
        "IMAGE_SIZE": Key(None, "side the images of folder:, caltech101, tinyimagenet and gtsrb are decoded to (None: "
                          "folder: 32, caltech101 224 cropped from 256, tinyimagenet 64, gtsrb 32)", type="int",
                          minimum=8),
        "MAX_TRAIN_SAMPLES": Key(None, "use a seeded class-balanced subset of this many training images",
                                 type="int", minimum=1, flags=("--max-train-samples",)),
        "IMBALANCE": Key(None, "long-tailed training pool: the class at rank c of a seeded order keeps "
                         "n_max * IMBALANCE^(-c/(C-1)) images, the CIFAR-10-LT profile (after MAX_TRAIN_SAMPLES; test "
                         "set unchanged; None: as the data come)", type="float", minimum=1, flags=("--imbalance",)),
        "MAX_TEST_SAMPLES": Key(None, "use a seeded class-balanced subset of this many test images",
                                type="int", minimum=1, flags=("--max-test-samples",)),
        # SEED + trial stays a valid 32-bit seed for numpy and torch
        "SEED": Key(seed, "base random seed; trial t uses SEED + t", minimum=0, maximum=2**30,
                    flags=("--seed",)),
        "TRIALS": Key(trials, "repetitions of the whole run", minimum=1, maximum=1000, flags=("--trials",),
                      resumable=True),
    }


def save_models_key(what: str) -> Key:
    """SAVE_MODEL: ``what`` of every cycle saved under <out>/models/ (the flag --save-models)."""
    return Key(False, f"save {what} under <out>/models/", switch=True, resumable=True, flags=("--save-models",))


def with_strategies(tree: Tree, serves: Iterable, runs_hooks: bool = True, names: Mapping[str, str] | None = None,
                    only: Iterable[str] | None = None) -> Tree:
    """``tree`` with the settings of the query strategies its script can run: those of every registered
    strategy (``only``: of these registry names) whose needs ``serves`` meets, and of their training
    hooks where the script runs hooks (``runs_hooks``; a script that does not cannot run such
    strategies). ``names`` maps the script's own spellings of strategies (the seed's, lower-case) to
    registry names, so that a strategy's setting given for a run of another strategy is refused."""
    from utils.samplers import get_strategy, list_strategies  # (importing the package registers every strategy)

    keys, owners = dict(tree.keys), {}
    for strategy in (get_strategy(name) for name in (only or list_strategies())):
        if strategy.missing(serves) or (strategy.training is not None and not runs_hooks):
            continue
        for key, key_def in strategy.keys(runs_hooks).items():
            if key_def.per_epochs == SCRIPT_EPOCHS:
                key_def = dataclasses.replace(key_def, per_epochs=tree.epochs_key)
            if key in tree.keys:
                raise ValueError(f"{tree.script}: its key {key} is also a setting of strategy {strategy.name}")
            keys[key] = key_def
            owners[key] = (*owners.get(key, ()), strategy.name)
    lower = {k.lower(): v for k, v in (names or {}).items()}
    if tree.strategy_key is None:  # the script runs its one strategy
        return dataclasses.replace(tree, keys=keys, owners=owners, used_strategies=lambda values: list(only or ()))
    return dataclasses.replace(tree, keys=keys, owners=owners,
                               used_strategies=lambda values: used_strategies(values[tree.strategy_key], lower))


def used_strategies(value: str | None, names: Mapping[str, str]) -> list | None:
    """The registry names of the strategies a strategy setting's ``value`` names (``A,B,C``; the script's
    own spellings mapped by ``names``); None when it names none yet, ``all``, or an unknown strategy (the
    script refuses that itself, with the list to choose from)."""
    from utils.samplers import get_strategy

    if value is None:
        return None
    used = []
    for name in (part.strip() for part in str(value).split(",") if part.strip()):
        if name.lower() == "all":
            return None
        try:
            used.append(get_strategy(names.get(name.lower(), name)).name)
        except UserError:
            return None
    return used


# script (and protocol) -> (config module, its tree function)
SCRIPTS = {
    "main_TOD.py": ("tod", "main_tod_tree"),
    "main_LL4AL.py": ("tod", "main_ll4al_tree"),
    "main_al.py --protocol deepal": ("deepal", "tree"),
    "main_al.py --protocol rethinking": ("rethinking", "tree"),
    "contrast_main.py": ("ccal", "contrast_tree"),
    "active_main.py": ("ccal", "active_tree"),
    "AL_center.py": ("lfosa", "center_tree"),
    "AL_center_temperature.py": ("lfosa", "temperature_tree"),
}


def _build(script: str) -> Tree:
    module, function = SCRIPTS[script]
    return getattr(importlib.import_module(f"config.{module}"), function)()


def tree(script: str) -> Tree:
    """The settings tree of ``script`` (a key of SCRIPTS), knowing which script every other key
    belongs to (for the error message of a misplaced ``--set``)."""
    own = _build(script)
    for other in SCRIPTS:
        if other != script:
            for key in _build(other).keys:
                own.others.setdefault(key, other)
    return own
