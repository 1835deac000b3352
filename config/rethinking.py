"""Rethinking deep AL's protocol (Simeoni et al., ICPR'20; spec B.3-B.7): normalisation per
dataset, augmentation, and the fixed constants of its training, LP and CEAL."""

NORMALISATION = {  # mean, std (B.3); other datasets keep their own
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((111.609 / 255, 113.161 / 255, 120.565 / 255), (50.498 / 255, 51.259 / 255, 50.244 / 255)),
    "mnist": ((0.1307,), (0.3081,)),
}
TRANSLATE = 4  # random translation with reflection, in pixels of a 32x32 image (scaled for other sizes)
FLIP = True  # horizontal flips, digits included, as the seed
INPUT_SIZE = {"cifar_cnn": 32, "resnet18": 32, "resnet34": 32, "lenet": 28}  # smaller images are resized up
LP_LABELED_BATCH = {128: 50, 64: 10}  # the seed overwrites --labeled-batch-size with these under LP
CEAL_DECAY = 0.00033  # the entropy threshold falls by this much per cycle
TEST_BATCH = 256
