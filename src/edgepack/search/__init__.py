"""`edgepack search`: recipes sampled by Optuna on Ray Tune, one pipeline run per trial, a Pareto front.

Only ``space`` and ``pareto`` are imported eagerly (standard library); Ray and Optuna are needed by
``edgepack.search.tune`` alone, from the ``[search]`` extra.
"""

from edgepack.search.pareto import OBJECTIVES, dominates, pareto_front
from edgepack.search.space import suggest, trial_recipe

__all__ = ["OBJECTIVES", "dominates", "pareto_front", "suggest", "trial_recipe"]
