"""Rethinking deep AL (Simeoni et al., ICPR'20), ``main_al.py --protocol rethinking`` (the default;
spec B.1-B.7): the seed's flags, the fixed constants of its training, label propagation and CEAL,
and (the profile) its per-dataset normalisation."""

from config import common_keys, with_strategies
from config.deepal import model_keys, open_set_keys, own_images_keys
from utils.core.config import Key, Tree
from utils.core.errors import UserError
from utils.methods.features import feature_keys
from utils.samplers.registry import Need

SERVES = frozenset({Need.STATE, Need.PREVIOUS_MODEL, Need.MC_DROPOUT})  # what the protocol gives its strategies

METHODS = {"random": "RandomSampling", "uncertainty_entropy": "EntropySampling", "coreset": "KCenterGreedy",
           "jlp": "jLP"}  # the seed's --al-method names -> the registry (the seed's coreset is the greedy k-center)
INPUT_SIZE = {"cifar_cnn": 32, "resnet18": 32, "resnet34": 32, "lenet": 28,
              "imagenet_resnet18": 32}  # smaller images are resized up
LP_LABELED_BATCH = {128: 50, 64: 10}  # the seed overwrites --labeled-batch-size with these under LP

NORMALISATION = {  # mean, std (B.3); other datasets keep their own
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "cifar100": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "svhn": ([111.609 / 255, 113.161 / 255, 120.565 / 255], [50.498 / 255, 51.259 / 255, 50.244 / 255]),
    "mnist": ([0.1307], [0.3081]),
}


def tree() -> Tree:
    keys = {
        "PROTOCOL": Key("rethinking", "the training protocol", choices=("rethinking", "deepal"),
                        flags=("--protocol",)),
        "AL_METHOD": Key(None, "random, uncertainty_entropy, coreset (greedy k-center), jlp, or any registered "
                         "strategy", type="str", flags=("--al-method",)),
        "ARCH": Key("cifar_cnn", "the network: the 13-layer ConvNet, the CIFAR ResNets, LeNet or torchvision's "
                    "ImageNet ResNet-18 (for IMAGE_SIZE >= 64)",
                    choices=tuple(INPUT_SIZE), flags=("--arch|-a",)),
        **common_keys("cifar10", seed=7),
        "SPLIT": Key(0, "the initial split file; trial t uses SPLIT + t", minimum=0, flags=("--split",)),
        "AL_BUDGET": Key(100, "labels per cycle, and the size of the initial split", minimum=1,
                         flags=("--al-budget",)),
        "AL_NB_CYCLES": Key(10, "AL cycles (trainings)", minimum=1, flags=("--al-nb-cycles", "--cycles"),
                            resumable=True),
        "EPOCHS": Key(200, "training epochs per cycle (a fresh network each cycle)", minimum=1, flags=("--epochs",)),
        "BATCH_SIZE": Key(32, "training batch", minimum=2, flags=("--batch-size|-b",)),
        "LABELED_BATCH_SIZE": Key(None, "labeled images per batch with ADD_LP (the seed overwrites it: 50 for "
                                  "batch 128, 10 for batch 64)", type="int", minimum=1,
                                  flags=("--labeled-batch-size",)),
        "LR": Key(0.2, "peak learning rate", above=0, flags=("--lr|--learning-rate",)),
        "INITIAL_LR": Key(0.0, "learning rate at the start of the linear warm-up", minimum=0,
                          flags=("--initial-lr",)),
        "LR_RAMPUP": Key(0, "warm-up epochs (0: none)", minimum=0, per_epochs="EPOCHS", flags=("--lr-rampup",)),
        "LR_RAMPDOWN_EPOCHS": Key(210, "the cosine reaches 0 at this epoch (at least EPOCHS)", minimum=1,
                                  per_epochs="EPOCHS", flags=("--lr-rampdown-epochs",)),
        "MOMENTUM": Key(0.9, "SGD momentum", minimum=0, maximum=1, flags=("--momentum",)),
        "NESTEROV": Key(True, "Nesterov momentum", flags=("--nesterov",)),
        "WEIGHT_DECAY": Key(2e-4, "weight decay", minimum=0, flags=("--weight-decay|--wd",)),
        "ISL2": Key(True, "L2-normalise the feature before the classifier (cifar_cnn)", flags=("--isL2",)),
        "FINETUNING": Key(False, "start cycle c from cycle c-1's trained model", flags=("--finetuning",)),
        "TEST_BATCH": Key(256, "test and pool-scoring batch", minimum=1),
        "MEAN": Key(None, "normalisation mean per channel (None: the dataset's own)", type="list[float]"),
        "STD": Key(None, "normalisation std per channel (None: the dataset's own)", type="list[float]", above=0),
        "TRANSLATE": Key(4, "random translation with reflection, in pixels of a 32x32 image (scaled to the "
                         "image size)", minimum=0),
        "FLIP": Key(True, "random horizontal flips (digits included, as the seed)"),
        "ADD_LP": Key(False, "+SEMI: label propagation pseudo-labels train with the labeled set",
                      flags=("--add-lp",)),
        "LP_MODE": Key("prob", "which pseudo-labels train: drawn ~ certainty, uniformly, or all",
                       choices=("prob", "uniform", "full"), flags=("--lp-mode",)),
        "LP_PERCENT": Key(0.5, "fraction of the unlabeled pool pseudo-labelled per epoch", above=0, maximum=1,
                          flags=("--lp-percent",)),
        "LP_STEP": Key(1, "label propagation every LP_STEP epochs", minimum=1, flags=("--lp-step",)),
        "START_EPOCH": Key(0, "label propagation runs after the epochs past this one", minimum=0,
                           flags=("--start-epoch",)),
        "TAU": Key(0.0, "certainty threshold of the pseudo-labels", minimum=0, maximum=1, flags=("--tau",)),
        "ADD_CEAL": Key(False, "+CEAL: confident unlabeled images train the next cycle with the predicted label",
                        flags=("--add-ceal",)),
        "CEAL_TH": Key(0.1, "CEAL's normalised-entropy threshold", minimum=0, maximum=1, flags=("--ceal-th",)),
        "CEAL_DECAY": Key(0.00033, "CEAL's threshold falls by this much per cycle", minimum=0),
        "ADD_UNSUPERVISED_PRETRAINING": Key(False, "+PRE: every cycle starts from the DeepCluster trunk",
                                            flags=("--add-unsupervised-pretraining",)),
        "LEARN_UNSUPERVISED_PRETRAINING": Key(False, "train DeepCluster first (and use it)",
                                              flags=("--learn-unsupervised-pretraining",)),
        "PRETRAIN_EPOCHS": Key(400, "DeepCluster epochs (the seed's learner: 400)", minimum=1,
                               flags=("--pretrain-epochs",)),
        "PRETRAIN_LR": Key(0.02, "DeepCluster learning rate", above=0, flags=("--pretrain-lr",)),
        "PRETRAIN_BATCH_SIZE": Key(128, "DeepCluster batch", minimum=2, flags=("--pretrain-batch-size",)),
        **model_keys(),
        **open_set_keys(),
        **own_images_keys("AL_BUDGET"),
        **feature_keys(),
        "SAVE_MODEL": Key(False, "save every cycle's model under <out>/models/", switch=True, resumable=True,
                          flags=("--save-models",)),
    }
    tree = Tree("main_al.py --protocol rethinking", keys, profile=_profile, check=_check, epochs_key="EPOCHS",
                strategy_key="AL_METHOD")
    return with_strategies(tree, SERVES, names=METHODS)


def _profile(values: dict) -> tuple:
    dataset = str(values["DATASET"]).lower()
    mean, std = NORMALISATION.get(dataset, (None, None))
    return f"rethinking {dataset}", {"MEAN": mean, "STD": std} if mean else {}


def _check(cfg) -> None:
    if cfg.PRETRAINED and (cfg.ADD_UNSUPERVISED_PRETRAINING or cfg.LEARN_UNSUPERVISED_PRETRAINING):
        raise UserError("--pretrained (ImageNet weights) and DeepCluster pre-training both set the trunk; give one")
    if cfg.sources["ISL2"] != "default" and cfg.ARCH != "cifar_cnn":
        raise UserError(f"--isL2 applies to --arch cifar_cnn only (the {cfg.ARCH} classifier reads its feature as it "
                        "is); leave it out")
    if cfg.ADD_LP and cfg.ADD_CEAL:
        raise UserError("--add-lp and --add-ceal cannot be combined (as in the seed)")
    if cfg.EPOCHS > cfg.LR_RAMPDOWN_EPOCHS:
        raise UserError(f"EPOCHS {cfg.EPOCHS} exceeds LR_RAMPDOWN_EPOCHS {cfg.LR_RAMPDOWN_EPOCHS}; raise "
                        "--lr-rampdown-epochs")
    if cfg.ADD_LP:
        labeled = LP_LABELED_BATCH.get(cfg.BATCH_SIZE, cfg.LABELED_BATCH_SIZE)
        if not labeled or labeled >= cfg.BATCH_SIZE:
            raise UserError("--add-lp needs --batch-size 128 or 64, or a --labeled-batch-size below --batch-size")
