"""Query strategies: pure scoring/selection functions plus one registry (see registry.py)."""

from utils.samplers.basic import tod_scores
from utils.samplers.registry import (
    QueryContext,
    Strategy,
    get_strategy,
    list_strategies,
    register_scorer,
    register_selector,
    top_k,
)

__all__ = ["QueryContext", "Strategy", "get_strategy", "list_strategies", "register_scorer",
           "register_selector", "tod_scores", "top_k"]
