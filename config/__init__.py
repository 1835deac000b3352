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

import importlib

from utils.core.config import Key, Tree

DATASETS_HELP = ("cifar10, cifar100, svhn, mnist, fashionmnist, caltech101, tinyimagenet, gtsrb, digits or "
                 "folder:PATH")


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
