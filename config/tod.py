"""TOD (Huang et al., ICCV'21) and its LL4AL baseline: the keys of TOD's config files (spec A.2)
and ours. The defaults are TOD's CIFAR-10 values; ``--config NAME`` applies a dataset config
(config/NAME.py: cifar10, cifar100, svhn, caltech101 as the seed's files, and digits)."""

import importlib
import pkgutil

import config
from config import common_keys, save_models_key, with_strategies
from utils.core.config import Key, Tree
from utils.core.errors import UserError
from utils.methods.features import feature_keys
from utils.samplers.registry import Need

NOT_DATASET_CONFIGS = {"ccal", "deepal", "lfosa", "rethinking", "tod"}
SAMPLING = {"TOD": "TOD", "LL4AL": "LearningLoss", "RANDOM": "RandomSampling"}  # --sampling -> the registry's name


def list_configs() -> list:
    """The dataset configs of main_TOD.py and main_LL4AL.py (``--config``)."""
    return sorted(m.name for m in pkgutil.iter_modules(config.__path__) if m.name not in NOT_DATASET_CONFIGS)


def dataset_config(name: str) -> dict:
    """The upper-case values of config/<name>.py."""
    if name not in list_configs():
        raise UserError(f"unknown config {name!r}; choose from {', '.join(list_configs())}")
    module = importlib.import_module(f"config.{name}")
    values = {k: v for k, v in vars(module).items() if k.isupper()}
    known = set(main_tod_tree().keys) | set(main_ll4al_tree().keys)
    stray = sorted(set(values) - known)
    if stray:
        raise UserError(f"config/{name}.py: {', '.join(stray)} is no setting of main_TOD.py or main_LL4AL.py")
    return values


def _keys(sampling: tuple, auxiliary: tuple, auxiliary_help: str) -> dict:
    return {
        "CONFIG": Key("cifar10", "the dataset config whose values apply (config/<name>.py)",
                      choices=tuple(list_configs()), flags=("--config",)),
        "SAMPLING": Key(sampling[0], "query strategy", choices=sampling, flags=("--sampling",)),
        "AUXILIARY": Key(auxiliary[0], auxiliary_help, choices=auxiliary, flags=("--auxiliary",)),
        **common_keys("cifar10", seed=0, trials=3),
        **feature_keys(linear=False),
        "MODEL": Key("resnet18", "classifier: the CIFAR ResNet-18/34, or the ImageNet ResNet-18 (Caltech-101)",
                     choices=("resnet18", "resnet34", "imagenet_resnet18")),
        "WIDTH": Key(64, "channels of the first stage of the CIFAR ResNets", minimum=1),
        "PRETRAINED": Key(None, "ImageNet weights for imagenet_resnet18's trunk (a .pth file)", type="str"),
        "BATCH": Key(128, "images per training and scoring batch (per process)", minimum=1),
        "START": Key(5000, "initial random labeled set", minimum=1),
        "ADDENDUM": Key(2500, "images queried per cycle", minimum=1),
        "SUBSET": Key(25000, "random unlabeled candidates scored per query", minimum=1),
        "CYCLES": Key(7, "AL cycles (train -> test -> query)", minimum=1, flags=("--cycles",), resumable=True),
        "EPOCH": Key(200, "training epochs per cycle", minimum=1, flags=("--epochs",)),
        "LR": Key(0.1, "SGD learning rate", above=0),
        "MOMENTUM": Key(0.9, "SGD momentum", minimum=0, maximum=1),
        "WDECAY": Key(5e-4, "SGD weight decay", minimum=0),
        "MILESTONES": Key([160], "epochs at which the learning rate drops x0.1", type="list[int]", minimum=1,
                          per_epochs="EPOCH"),
    }


def main_tod_tree() -> Tree:
    keys = _keys(("TOD", "RANDOM"), ("TOD", "NONE"),
                 "TOD: cross-entropy + WEIGHT x the COD loss with an EMA teacher; NONE: cross-entropy only")
    keys["WEIGHT"] = Key(0.02, "weight of the COD loss (--auxiliary TOD)", minimum=0)
    keys["SAVE_MODEL"] = save_models_key("every cycle's model (trial<T>_cycle<C>.pt)")
    tree = Tree("main_TOD.py", keys, profile=_profile, check=_check, epochs_key="EPOCH", strategy_key="SAMPLING")
    return with_strategies(tree, {Need.PREVIOUS_MODEL}, runs_hooks=False, only=SAMPLING.values(), names=SAMPLING)


def main_ll4al_tree() -> Tree:
    keys = _keys(("LL4AL", "RANDOM"), ("LL4AL", "NONE"),
                 "LL4AL: the loss-prediction loss also trains the backbone until EPOCHL; NONE: the loss module "
                 "trains on detached features")
    keys["MARGIN"] = Key(1.0, "margin of the pairwise loss-prediction (ranking) loss", minimum=0)
    keys["LL_WEIGHT"] = Key(1.0, "weight of the loss-prediction loss (lambda; 1.0 in TOD's code)", minimum=0)
    keys["SAVE_MODEL"] = save_models_key("every cycle's model and loss module (trial<T>_cycle<C>.pt, "
                                         "..._loss_module.pt)")
    keys["EPOCHL"] = Key(120, "epoch after which the loss module's gradient stops reaching the backbone",
                         minimum=0, per_epochs="EPOCH")
    tree = Tree("main_LL4AL.py", keys, profile=_profile, check=_check, epochs_key="EPOCH", strategy_key="SAMPLING")
    return with_strategies(tree, (), runs_hooks=False, only=SAMPLING.values(), names=SAMPLING)


def _profile(values: dict) -> tuple:
    return f"config {values['CONFIG']}", dataset_config(values["CONFIG"])


def _check(cfg) -> None:
    if cfg.ADDENDUM > cfg.SUBSET:
        raise UserError(f"ADDENDUM={cfg.ADDENDUM} is larger than SUBSET={cfg.SUBSET}, the candidates scored per "
                        "query; lower ADDENDUM or raise SUBSET")
    if cfg.PRETRAINED and cfg.MODEL != "imagenet_resnet18":
        raise UserError(f"PRETRAINED applies to MODEL=imagenet_resnet18 only, not {cfg.MODEL}; --set PRETRAINED=None")
