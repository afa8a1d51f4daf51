"""The search on Ray Tune: OptunaSearch (TPE, or NSGA-II for two objectives) with the accuracy budget as a
constraint, one function trial per recipe, resumable from DIR/tune after an interruption.

Ray starts locally on 127.0.0.1 without a dashboard unless ``address`` names an existing cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import ConfigError
from edgepack.files import atomic_write_json
from edgepack.recipe import Objective, Recipe, SearchSettings, to_plain, to_toml
from edgepack.search.space import suggest
from edgepack.search.trial import run_trial

log = logging.getLogger(__name__)

METRIC = {"latency": "latency_us_p50", "size": "gzip_bytes"}
STATE = "search.json"  # DIR's identity: the settings a resume must match
TUNE_DIR = "tune"
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class SearchJob:
    """One `edgepack search`: the base recipe (with its space), the budget, the objective and where it runs."""

    recipe: Recipe
    out: Path
    max_drop: float
    objective: Objective
    trials: int
    timeout: float | None = None
    address: str | None = None
    keep_trials: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective.parse(self.objective, "--objective"))
        if self.recipe.search is None:
            object.__setattr__(self, "recipe", _with_space(self.recipe, SearchSettings()))
        if not (isinstance(self.trials, int) and self.trials >= 1):
            raise ConfigError(f"--trials: got {self.trials!r}; expected an integer >= 1")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout: got {self.timeout!r}; expected seconds > 0")
        if not (isinstance(self.max_drop, int | float) and 0 <= self.max_drop <= 100):
            raise ConfigError(f"--max-drop: got {self.max_drop!r}; expected points in [0, 100]")
        object.__setattr__(self, "out", Path(self.out).resolve())

    @property
    def space(self) -> SearchSettings:
        assert self.recipe.search is not None
        return self.recipe.search

    def identity(self) -> dict[str, Any]:
        """What must be equal for DIR to be resumed (not the timeout or the cluster address)."""
        return {"recipe": to_plain(self.recipe), "max_drop": self.max_drop, "objective": self.objective.value,
                "trials": self.trials, "keep_trials": self.keep_trials}  # fmt: skip


def _with_space(recipe: Recipe, space: SearchSettings) -> Recipe:
    import dataclasses

    return dataclasses.replace(recipe, search=space)


def check_out(job: SearchJob) -> bool:
    """True when ``job.out`` holds this same search to resume; ConfigError if it holds anything else."""
    out = job.out
    if not out.exists():
        return False
    state = out / STATE
    if not state.is_file():
        if out.is_dir() and not any(out.iterdir()):
            return False
        raise ConfigError(f"--out {out}: exists and is not an edgepack search directory; choose a new directory")
    if json.loads(state.read_text()) != json.loads(json.dumps(job.identity())):
        raise ConfigError(f"--out {out}: holds a search with other settings (recipe, budget, objective or "
                          "trials); resume it with the same ones or choose a new directory")  # fmt: skip
    return True


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail in seconds, before anything is written, when nothing listens at ``address`` (host:port or ray://...)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected HOST:PORT (a Ray head's GCS address) or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(
            f"--address {address}: no Ray cluster reachable there ({e.strerror or e}); start one "
            "with `ray start --head` or leave --address out to run locally"
        ) from None


def _loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0]
    return host in ("localhost", "::1") or host.startswith("127.")


def start_ray(address: str | None) -> None:
    """Join ``address``, or start a local Ray on 127.0.0.1 only (no dashboard, no usage reporting)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    src = str(Path(__file__).resolve().parents[2])  # workers import the same edgepack as this process
    env = {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False,
                              "configure_logging": False}  # fmt: skip
    if address is None:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **kwargs)
    else:
        if _loopback(address):
            kwargs["_node_ip_address"] = "127.0.0.1"
        ray.init(address=address, **kwargs)


def _trainable(config: dict[str, Any], base: str, max_drop: float, trials_dir: str, keep: bool) -> None:
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    tune.report(run_trial(Path(trials_dir) / trial_id, config, base, max_drop, keep))


def _searcher(job: SearchJob) -> Any:
    import functools

    import optuna

    from edgepack.search._ray import BudgetedOptunaSearch

    seed = job.space.seed
    if job.objective is Objective.BOTH:
        metric, mode = [METRIC["latency"], METRIC["size"]], ["min", "min"]
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, job.trials // 4)))  # fmt: skip
    else:
        metric, mode = METRIC[job.objective.value], "min"
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, job.trials // 3)))  # fmt: skip
    return BudgetedOptunaSearch(space=functools.partial(suggest, space=job.space), metric=metric, mode=mode,
                                sampler=sampler, max_drop=job.max_drop)  # fmt: skip


def run_search(job: SearchJob, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the search of ``job``; returns the summary the report is written from."""
    import ray
    from ray import tune

    from edgepack.search._ray import Progress

    resume = check_out(job)
    if job.address is not None:
        check_address(job.address)
    start_ray(job.address)
    created = not job.out.exists()
    try:
        job.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.out / STATE, job.identity())
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, base=to_toml(job.recipe), max_drop=job.max_drop,
                                 trials_dir=str(job.out / TRIALS_DIR), keep=job.keep_trials),
            {"cpu": job.space.cpus_per_trial},
        )  # fmt: skip
        path = job.out / TUNE_DIR
        if resume and tune.Tuner.can_restore(str(path)):
            log.info("resuming the search in %s", job.out)
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)  # fmt: skip
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=_searcher(job), num_samples=job.trials,
                                            time_budget_s=job.timeout),
                run_config=tune.RunConfig(name=TUNE_DIR, storage_path=str(job.out), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                                          callbacks=[Progress(progress)]),
            )  # fmt: skip
        with contextlib.redirect_stdout(sys.stderr):  # Tune's banners: stdout stays free for --json
            grid = tuner.fit()
        trials = collect(grid, job.out / TRIALS_DIR)
    except BaseException:
        if created and not resume and not (job.out / TUNE_DIR).exists():
            import shutil

            shutil.rmtree(job.out, ignore_errors=True)  # nothing started: leave nothing behind
        raise
    finally:
        ray.shutdown()
    from edgepack.search.report import write_results

    return write_results(job, trials)


def collect(grid: Any, trials_dir: Path) -> list[dict[str, Any]]:
    """Every trial Tune ran: its config, status, metrics or error, from Tune's results and the trial folders."""
    by_config = {}
    for d in sorted(trials_dir.glob("*/config.json")):
        by_config[json.dumps(json.loads(d.read_text()), sort_keys=True)] = d.parent
    out = []
    for result in grid:
        config = dict(result.config or {})
        folder = by_config.get(json.dumps(config, sort_keys=True))
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or (folder.name if folder else Path(result.path).name)
        record: dict[str, Any] = {"trial_id": trial_id, "config": config,
                                  "dir": str(folder) if folder else None}  # fmt: skip
        if result.error is not None or "gzip_bytes" not in metrics:
            record["status"] = "failed"
            record["error"] = (
                _error_line(result.error)
                if result.error is not None
                else "stopped before it reported a result (Ctrl-C, --timeout, or its worker died)"
            )
        else:
            record["status"] = "done"
            record["metrics"] = {k: metrics[k] for k in (
                "artifact", "file", "format", "precision", "runtime", "threads", "accuracy", "baseline_accuracy",
                "drop_points", "within_budget", "latency_us_p50", "gzip_bytes", "size_bytes",
                "gzip_ratio_vs_baseline_tflite", "sparsity") if k in metrics}  # fmt: skip
        out.append(record)
    return sorted(out, key=lambda r: r["trial_id"])


def _error_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    ours = [ln for ln in lines if "TrialFailed" in ln or "edgepack run exited" in ln]
    line = (ours or lines or [type(error).__name__])[-1]
    return f"{type(error).__name__}: {line}"[:500]
