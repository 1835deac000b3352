"""SVHN, as TOD's config/svhn.py: 10 % / 5 % / 40 % of the 73,257 training images for START /
ADDENDUM / SUBSET; otherwise the CIFAR-10 values (config/tod.py's defaults)."""

DATASET = "svhn"
SUBSET = 29302
START = 7324
ADDENDUM = 3662
WEIGHT = 0.005
