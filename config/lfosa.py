"""LfOSA (Ning et al., CVPR'22; spec 004 B): the defaults of AL_center.py and
AL_center_temperature.py (B.1), the per-dataset normalisation and augmentation (B.2) and the
fixed training constants (B.4). Command-line flags override the flag defaults; ``--set KEY=VALUE``
overrides the upper-case values below."""

# --------------------------------------------------------------------- the seed's flags (B.1)
FLAGS = {
    "batch_size": 128,  # train, unlabeled-scoring and test batches (per process)
    "lr_model": 0.01,
    "lr_cent": 0.5,
    "weight_cent": 1.0,  # the README runs use 0 (center loss off)
    "max_epoch": 100,  # every cycle retrains from scratch
    "max_query": 10,  # AL cycles (train -> test -> query)
    "query_batch": 1500,
    "stepsize": 20,
    "gamma": 0.5,
    "model": "resnet18",
    "eval_freq": 100,
    "known_class": 20,
    "init_percent": 16,  # the README: 8 for CIFAR-100 and TinyImageNet, 1 for CIFAR-10
    "save_dir": "log_AL/",  # the README's; the seed's own default was "log"
    "seed": 1,
}
TEMPERATURE_FLAGS = {"known_T": 0.5, "unknown_T": 2.0, "modelB_T": 1.0}  # AL_center_temperature.py only
DEFAULT_DATASET = {"AL_center.py": "cifar10", "AL_center_temperature.py": "cifar100"}
DEFAULT_STRATEGY = {"AL_center.py": "AV_based", "AL_center_temperature.py": "AV_temperature"}  # seed: AV_based2
SEED_STRATEGIES = {"random": "RandomSampling", "uncertainty": "EntropySampling"}  # the seed's names -> registry

# --------------------------------------------------------------------- fixed values (--set KEY=VALUE)
SETTINGS = {
    "MOMENTUM": 0.9,
    "WEIGHT_DECAY": 5e-4,
    "WIDTH": 64,  # channels of the first ResNet stage
    "BOTTLENECK": 2,  # fc1: 512 -> 2 -> fc2 (B.3)
    "ROTATION": 15.0,  # RandomRotation(15) after crop and flip (B.2), in degrees; 0 = off
    "MC_DROPOUT": 0.2,  # dropout before fc1, only for the MC-dropout strategies (BALD)
    "MC_SAMPLES": 10,
}
MODELS = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}  # BasicBlocks per stage (CIFAR ResNets)
NORMALISATION = {  # mean, std (B.2); other datasets keep their own (crop padding and flips too)
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
