"""Query strategies: pure scoring/selection functions plus one registry (see registry.py).

Importing this package registers every strategy; ``list_strategies()`` names them.
"""

import utils.samplers.ccal  # noqa: F401 (CCAL's joint query: the selector CCAL)
from utils.samplers import (  # noqa: F401 (importing a module registers its strategies)
    adversarial,
    alfamix,
    bait,
    bandit,
    batchbald,
    coreset,
    diversity,
    dpp,
    epig,
    galaxy,
    graph,
    learned,
    mcadl,
    representation,
    stochastic,
    uncertainty,
    views,
)
from utils.samplers.adversarial import bim_norms, deepfool_norms
from utils.samplers.alfamix import alfamix_candidates, alfamix_select
from utils.samplers.bait import bait_select
from utils.samplers.bandit import exp4p_probs, exp4p_update, iw_accuracy
from utils.samplers.basic import tod_scores
from utils.samplers.batchbald import batchbald_select
from utils.samplers.coreset import robust_kcenter
from utils.samplers.diversity import badge_select, cluster_margin_select, kcenter_greedy, kmeans_select
from utils.samplers.dpp import kdpp_select
from utils.samplers.epig import epig_scores
from utils.samplers.galaxy import galaxy_select
from utils.samplers.learned import train_gcn, waal_scores
from utils.samplers.mcadl import mcadl_scores, pixel_neighbour_terms, top_mass_uncertainty
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
from utils.samplers.representation import (
    centroid_initial,
    dropquery_select,
    herding_select,
    probcover_select,
    purity_delta,
    select_initial,
    typiclust_select,
)
from utils.samplers.stochastic import stochastic_log_weights, stochastic_select
from utils.samplers.uncertainty import bald_scores, entropy_scores, least_confidence_scores, margin_scores
from utils.samplers.views import stratified_by_cluster, view_variance

__all__ = ["alfamix_candidates", "alfamix_select", "badge_select", "bait_select", "bald_scores", "batchbald_select",
           "bim_norms", "centroid_initial", "cluster_margin_select", "deepfool_norms", "dropquery_select",
           "entropy_scores", "epig_scores", "exp4p_probs", "exp4p_update", "galaxy_select", "get_strategy",
           "herding_select", "iw_accuracy", "kcenter_greedy", "kdpp_select", "kmeans_select",
           "least_confidence_scores", "list_strategies", "margin_scores", "mcadl_scores", "pixel_neighbour_terms",
           "probcover_select", "purity_delta", "QueryContext", "register_scorer", "register_selector",
           "robust_kcenter", "select_initial", "stochastic_log_weights", "stochastic_select", "Strategy",
           "stratified_by_cluster", "tod_scores", "top_k", "top_mass_uncertainty", "train_gcn", "typiclust_select",
           "view_variance", "waal_scores"]
