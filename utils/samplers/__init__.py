"""Query strategies: pure scoring/selection functions plus one registry (see registry.py).

Importing this package registers every strategy; ``list_strategies()`` names them.
"""

import utils.samplers.ccal  # noqa: F401 (CCAL's joint query: the selector CCAL)
from utils.samplers import adversarial, batchbald, coreset, diversity, graph, learned, uncertainty  # noqa: F401
from utils.samplers.adversarial import bim_norms, deepfool_norms
from utils.samplers.basic import tod_scores
from utils.samplers.batchbald import batchbald_select
from utils.samplers.coreset import robust_kcenter
from utils.samplers.diversity import badge_select, cluster_margin_select, kcenter_greedy, kmeans_select
from utils.samplers.learned import train_gcn, waal_scores
from utils.samplers.openset import av_scores, known_posteriors, max_activations  # noqa: F401 (LfOSA)
from utils.samplers.registry import (
    QueryContext,
    Strategy,
    get_strategy,
    list_strategies,
    register_scorer,
    register_selector,
    top_k,
)
from utils.samplers.uncertainty import bald_scores, entropy_scores, least_confidence_scores, margin_scores

__all__ = ["QueryContext", "Strategy", "badge_select", "bald_scores", "batchbald_select", "bim_norms",
           "cluster_margin_select", "deepfool_norms", "entropy_scores", "get_strategy", "kcenter_greedy",
           "kmeans_select", "least_confidence_scores", "list_strategies", "margin_scores", "register_scorer",
           "register_selector", "robust_kcenter", "tod_scores", "top_k", "train_gcn", "waal_scores"]
