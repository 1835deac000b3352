"""The ground floor, one job a module: errors, command line, settings, registries, data, splits,
open-set pools and oracles, training and inference, RNG state, progress reporting, the run (commit,
resume), the results folder, torch.distributed. Nothing here imports config/, models/ or the utils
packages above it (tests/test_architecture.py)."""
