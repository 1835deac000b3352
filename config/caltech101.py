"""Caltech-101, as TOD's config/caltech101.py: an ImageNet ResNet-18 with a pretrained trunk, 50
epochs per cycle; the values not listed are the CIFAR-10 ones (config/tod.py's defaults)."""

DATASET = "caltech101"
MODEL = "imagenet_resnet18"
PRETRAINED = "./resnet18-5c106cde.pth"
BATCH = 64
SUBSET = 4340
START = 868
ADDENDUM = 434
WEIGHT = 0.1
EPOCH = 50
LR = 0.01
MILESTONES = [40]
EPOCHL = 30
