"""Graph-based acquisition: jLP of Rethinking deep AL (Simeoni et al., ICPR'20, Sec. 4)."""

import numpy as np
import torch

from utils.methods.label_propagation import jlp_select, knn_graph
from utils.samplers.registry import QueryContext, register_selector


@register_selector("jLP", aliases=("joint_label_propagation",))
def jlp_positions(ctx: QueryContext) -> np.ndarray:
    """kNN graph over the labeled and candidate embeddings, then jLP's sequential diffusion from
    the labeled set: the candidates least reached are queried."""
    labeled = ctx.labeled_features()
    features = torch.cat([labeled, ctx.features()]).numpy()
    graph = knn_graph(features, use_gpu=ctx.dist.device.type == "cuda", desc="query")
    return jlp_select(graph, np.arange(len(labeled)), ctx.query_size) - len(labeled)
