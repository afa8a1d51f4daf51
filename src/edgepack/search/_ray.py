"""The pieces of the search that subclass Ray's classes; imported only where Ray is installed ([search] extra).

Module-level classes, so Tune can pickle them into its experiment state and restore them after Ctrl-C.
"""

from __future__ import annotations

import sys
from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

CONSTRAINT = "accuracy_drop_over_budget"  # points; <= 0 is feasible for the sampler


class BudgetedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets each trial's accuracy drop over the budget as an Optuna constraint before telling the
    study, so TPE and NSGA-II prefer feasible trials."""

    def __init__(self, *args: Any, max_drop: float, **kwargs: Any) -> None:
        self.max_drop = max_drop
        super().__init__(*args, **kwargs)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result and "drop_points" in result:
            ot_trial.set_constraint(CONSTRAINT, float(result["drop_points"]) - self.max_drop)
        super().on_trial_complete(trial_id, result, error)


class Progress(tune.Callback):
    """A line on stderr per finished trial (Tune's own table is off: stdout stays free for --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        if self.enabled and "gzip_bytes" in r:
            print(f"trial {trial.trial_id}: {r['artifact']} {r['runtime']} accuracy {r['accuracy']:.4f} "
                  f"(drop {r['drop_points']:+.2f}) p50 {r['latency_us_p50']:.1f} us gzip {r['gzip_bytes']} B",
                  file=sys.stderr, flush=True)  # fmt: skip

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.enabled:
            print(f"trial {trial.trial_id}: failed", file=sys.stderr, flush=True)
