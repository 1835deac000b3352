"""The shared core: command line, settings, data, splits, open-set pools, the run loop, training and
inference, the results folder, torch.distributed."""
