"""Caltech-101, as TOD's config/caltech101.py: ImageNet ResNet-18 with a pretrained trunk."""

DATASET = "caltech101"
CLASS = 101
NUM_TRAIN = 7766
BATCH = 64
SUBSET = 4340
START = 868
ADDENDUM = 434
TRIALS = 3
CYCLES = 7
MARGIN = 1.0
WEIGHT = 0.1
EPOCH = 50
LR = 0.01
MOMENTUM = 0.9
WDECAY = 5e-4
MILESTONES = [40]
EPOCHL = 30
MODEL = "imagenet_resnet18"
PRETRAINED = "./resnet18-5c106cde.pth"
