"""DeepCluster unsupervised pre-training (Caron et al., ECCV'18), the "+PRE" of Rethinking deep AL.

Every epoch: embed the whole pool, PCA-whiten and L2-normalise the embeddings, cluster them with
k-means into k = 5 C groups, use the cluster ids as labels, re-initialise the classifier head, and
train one epoch of cross-entropy with the clusters sampled uniformly (every cluster contributes
equally many images, Sec. 3.4 "avoiding trivial solutions").
"""

import numpy as np
import torch
from torch import nn

from utils.core import distributed
from utils.core.data import make_loader
from utils.core.train import predict

CLUSTERS_PER_CLASS = 5
KMEANS_ITERATIONS = 20
PCA_POWER = -0.5  # whitening


def pca_whiten(features, dim=None, power=PCA_POWER):
    """Project centred features on their top ``dim`` principal directions, scale direction i by
    eigenvalue_i^power (whitening at -0.5), then L2-normalise the rows."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(x.T @ x / max(1, len(x) - 1))
    order = np.argsort(eigvals)[::-1][: dim or x.shape[1]]
    scale = np.maximum(eigvals[order], 1e-12) ** power
    projected = (x @ eigvecs[:, order]) * scale
    projected /= np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)
    return projected.astype(np.float32)


def cluster_assignments(features, clusters, seed=0, iterations=KMEANS_ITERATIONS):
    """k-means (faiss) cluster id of every row of the whitened ``features``."""
    import faiss

    points = np.ascontiguousarray(pca_whiten(features))
    kmeans = faiss.Kmeans(points.shape[1], clusters, niter=iterations, seed=seed % 2**31, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1_000_000)
    kmeans.train(points)
    _, assigned = kmeans.index.search(points, 1)
    return assigned[:, 0]


def uniform_over_clusters(labels, count, rng):
    """``count`` indices (positions into ``labels``) drawn so that every non-empty cluster gives
    the same number, with replacement inside a cluster only when it is too small."""
    clusters = np.unique(labels)
    per_cluster = -(-count // len(clusters))
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], clusters)
    sizes = np.bincount(labels, minlength=labels.max() + 1)[clusters]
    offsets = np.concatenate([rng.permutation(per_cluster) % size if size >= per_cluster
                              else rng.integers(0, size, per_cluster) for size in sizes])
    picks = order[np.repeat(starts, per_cluster) + offsets]
    return rng.permutation(picks)[:count]


def pretrain(model, data, indices, num_classes, epochs, batch_size, lr, dist, run, seed=0, workers=0):
    """DeepCluster on ``indices`` of ``data.train`` for ``epochs`` epochs; the model's head is
    replaced by one with 5 C outputs, re-created after every clustering. Returns the model."""
    clusters = CLUSTERS_PER_CLASS * num_classes
    rng = np.random.default_rng(seed)
    indices = np.asarray(indices)
    for epoch in run.progress(range(epochs), "deepcluster"):
        features = predict(model, data, indices, lambda out, _y: out.features.float(), batch_size, dist, workers)
        labels = cluster_assignments(features.numpy(), clusters, seed=seed + epoch)
        model.reset_heads(clusters)
        model.to(dist.device)
        cluster_of = torch.full((len(data.train),), -1, dtype=torch.long)
        cluster_of[torch.as_tensor(indices)] = torch.as_tensor(labels, dtype=torch.long)
        chosen = indices[uniform_over_clusters(labels, len(indices), rng)]
        net = distributed.wrap(model, dist)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-5)
        net.train()
        total, batches = 0.0, 0
        for images, _targets, batch_indices in make_loader(data.train, chosen, batch_size, dist=dist, workers=workers):
            logits = net(data.train_transform(images.to(dist.device))).logits
            loss = nn.functional.cross_entropy(logits, cluster_of[batch_indices].to(dist.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        run.scalar("deepcluster/train_loss", total / max(batches, 1), epoch)
    return model


def save_trunk(model, path):
    """Save every weight of ``model`` except its heads (``model.HEADS``), atomically."""
    from utils.core.results import atomic_write

    state = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(h + "." for h in model.HEADS))}
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_trunk(model, path):
    """Overwrite every weight but the heads with the pre-trained ones in ``path``."""
    import os

    from utils.core.cli import UserError
    from utils.core.results import load_tensors

    if not os.path.isfile(path):
        raise UserError(f"no DeepCluster weights at {path}: run once with --learn-unsupervised-pretraining True "
                        "(it trains and saves them there)")
    state = load_tensors(path, "DeepCluster weights", "train them again with --learn-unsupervised-pretraining True")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except Exception as exc:
        raise UserError(f"cannot load DeepCluster weights {path} into this model ({exc}); "
                        "train them again with --learn-unsupervised-pretraining True") from None
    heads = tuple(h + "." for h in model.HEADS)
    if unexpected or any(not k.startswith(heads) for k in missing):
        raise UserError(f"DeepCluster weights {path} do not fit this model (another --arch or dataset?)")
    return model
