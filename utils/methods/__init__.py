"""Pieces that papers add to training: COD/EMA/ranking losses, label propagation, DeepCluster,
contrastive (CSI) training, center loss."""
