"""The augmented-view strategies (the query rules of the toolkit's ssl_Consistency, ssl_Diff2AugDirect and
ssl_Diff2AugKmeans), each rule on a case whose answer is known."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import tiny_context, tiny_data
from torch import nn

from models.output import ModelOutput
from utils.core.data import BatchTransform
from utils.samplers import get_strategy, margin_scores, stratified_by_cluster, view_variance

pytestmark = pytest.mark.usefixtures("one_thread")


class PixelNet(nn.Module):
    """Logits linear in the pixels: a horizontal flip changes them unless the image is symmetric."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return ModelOutput(self.fc(x.flatten(1)), x.flatten(1))


def test_view_variance_is_the_population_variance_summed_over_classes():
    views = [torch.softmax(torch.randn(7, 4, generator=torch.Generator().manual_seed(v)), 1) for v in range(5)]
    expected = torch.stack(views).var(0, unbiased=False).sum(1)
    assert torch.allclose(view_variance(iter(views)), expected, atol=1e-6)
    assert torch.equal(view_variance([views[0]] * 3), torch.zeros(7))


def symmetric_and_not(n=30):
    """tiny_data with images 0..n/2-1 symmetric under a horizontal flip, the rest not; random flips as the
    training view."""
    data = tiny_data(n)
    images = data.train.images.clone()
    images[: n // 2] = torch.cat([images[: n // 2, :, :, :2], images[: n // 2, :, :, :2].flip(-1)], dim=-1)
    data.train.images[:] = images
    return dataclasses.replace(data, train_transform=BatchTransform((0.5,), (0.25,), flip=True))


def test_consistency_queries_the_images_whose_prediction_changes_under_the_views():
    data = symmetric_and_not()
    ctx = tiny_context(data.train_idx, 10, data=data)
    ctx = dataclasses.replace(ctx, model=PixelNet().eval(), settings={"CONSISTENCY_VIEWS": 8})
    ctx.params = get_strategy("ConsistencySampling").params_from(ctx.settings)
    scores = get_strategy("ConsistencySampling").scores(ctx)
    assert torch.all(scores[:15] < 1e-10)  # symmetric: every view predicts the same
    assert torch.all(scores[15:] > 1e-8)  # (8 random flips each: all differ from the plain view w.p. 1 - 2^-7)
    queried = get_strategy("ConsistencySampling").select(ctx)
    assert set(queried.tolist()) <= set(range(15, 30))


def test_two_view_margin_ranks_the_margin_of_the_plain_and_augmented_mean():
    data = tiny_data(30)
    always_flipped = dataclasses.replace(data, train_transform=lambda images: data.eval_transform(images.flip(-1)))
    ctx = dataclasses.replace(tiny_context(data.train_idx, 5, data=always_flipped), model=PixelNet().eval())
    with torch.no_grad():
        x = data.eval_transform(data.train.images)
        mean = (torch.softmax(ctx.model(x).logits, 1) + torch.softmax(ctx.model(x.flip(-1)).logits, 1)) / 2
    assert torch.allclose(get_strategy("TwoViewMargin").scores(ctx), -margin_scores(mean), atol=1e-6)
    assert sorted(get_strategy("diff2aug_direct").select(ctx).tolist()) == sorted(
        torch.topk(-margin_scores(mean), 5).indices.tolist())


def test_stratified_by_cluster_takes_proportional_quotas_then_round_robin_from_cluster_0():
    order = np.array([5, 4, 3, 2, 1, 0])  # position 5 most uncertain
    clusters = np.array([0, 0, 0, 1, 1, 2])  # sizes 3, 2, 1 of 6: floor quotas 1, 1, 0 for k = 3, one short
    assert stratified_by_cluster(order, clusters, 3).tolist() == [2, 1, 4]  # cluster 0 gets the extra one
    assert sorted(stratified_by_cluster(order, clusters, 6).tolist()) == list(range(6))
    # k = 4: quotas 2, 1, 0, one short: cluster 0 (it has room) takes it
    assert stratified_by_cluster(order, clusters, 4).tolist() == [2, 1, 0, 4]
    # k = 5: quotas 2, 1, 0; two short: clusters 0 and 1 take one each
    assert stratified_by_cluster(order, clusters, 5).tolist() == [2, 1, 0, 4, 3]


def test_two_view_margin_kmeans_queries_across_clusters():
    data = tiny_data(60)
    ctx = tiny_context(np.arange(20, 60), 8, data=data)
    ctx.settings["DIFF2AUG_CLUSTERS"] = 4
    picked = get_strategy("TwoViewMarginKMeans").select(ctx)
    assert len(set(picked.tolist())) == 8 and set(picked.tolist()) <= set(range(20, 60))
