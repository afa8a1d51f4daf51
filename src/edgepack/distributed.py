"""Data-parallel training and fine-tuning on several processes with tf.distribute.MultiWorkerMirroredStrategy.

A worker is configured by ``--workers host:port,... --worker-index I`` or by TF_CONFIG from the environment
(the form TensorFlow's own tooling uses). Every worker runs the same command on the same data; Keras shards
the batches between them and all-reduces the gradients, so the model is the same on every worker. Worker 0
(the chief) writes the run directory; the others write to a temporary one that is removed at the end.
Standard library only until ``strategy_scope`` (outside edgepack.train, whose import loads TensorFlow): the
strategy must exist before TensorFlow runs its first op.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import ConfigError


@dataclass(frozen=True)
class Cluster:
    """The workers of one multi-worker job and which of them this process is."""

    workers: tuple[str, ...]
    index: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def tf_config(self) -> dict[str, Any]:
        return {"cluster": {"worker": list(self.workers)}, "task": {"type": "worker", "index": self.index}}


def _check_worker(address: str, what: str) -> str:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: got {address!r}; expected HOST:PORT with a port in 1..65535")
    return f"{host}:{int(port)}"


def parse_cluster(workers: str | None, index: int | None, environ: dict[str, str] | None = None) -> Cluster | None:
    """The cluster from the flags, else from TF_CONFIG; None for a single process (the default)."""
    environ = os.environ if environ is None else environ
    if workers is None:
        if index is not None:
            raise ConfigError("--worker-index: only applies with --workers host:port,host:port")
        raw = environ.get("TF_CONFIG")
        if not raw:
            return None
        try:
            config = json.loads(raw)
            names = config["cluster"]["worker"]
            task = config["task"]
            kind, index = task["type"], task["index"]
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"TF_CONFIG: got {raw[:120]!r}; expected JSON like {{\"cluster\": {{\"worker\": "
                              "[\"host:port\", ...]}, \"task\": {\"type\": \"worker\", \"index\": 0}}") from None  # fmt: skip
        extra = sorted(set(config["cluster"]) - {"worker"})
        if kind != "worker" or extra:
            raise ConfigError(f"TF_CONFIG: got task type {kind!r}" + (f" and {', '.join(extra)} jobs" if extra else "")
                              + "; MultiWorkerMirroredStrategy here uses only 'worker' tasks")  # fmt: skip
        what = "TF_CONFIG cluster.worker"
    else:
        names = [w for w in workers.split(",") if w.strip()]
        what = "--workers"
        if index is None:
            raise ConfigError("--workers: give --worker-index I too (0 for the chief, which writes DIR)")
    if not isinstance(names, list) or not names:
        raise ConfigError(f"{what}: got an empty list; expected host:port,host:port")
    names = [_check_worker(str(w), what) for w in names]
    if len(set(names)) != len(names):
        raise ConfigError(f"{what}: got {','.join(names)}; each worker needs its own host:port")
    if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(names)):
        raise ConfigError(f"--worker-index: got {index!r}; expected 0..{len(names) - 1} for {len(names)} workers")
    return Cluster(tuple(names), index)


@contextlib.contextmanager
def strategy_scope(cluster: Cluster | None) -> Iterator[Any]:
    """Inside: models built, compiled and fitted are mirrored over the cluster's workers. No cluster: no-op."""
    if cluster is None:
        yield None
        return
    import sys

    if "edgepack.tf" in sys.modules and sys.modules["edgepack.tf"].multi_worker is None:
        raise ConfigError("--workers: TensorFlow was loaded before the multi-worker strategy was set up; "
                          "MultiWorkerMirroredStrategy must come first")  # fmt: skip
    os.environ["TF_CONFIG"] = json.dumps(cluster.tf_config())
    os.environ["EDGEPACK_MULTI_WORKER"] = "1"
    from edgepack import tf as tf_door

    strategy = tf_door.multi_worker
    with strategy.scope():
        yield strategy


@contextlib.contextmanager
def worker_out(cluster: Cluster | None, out: str | Path, copy_from: str | Path | None = None) -> Iterator[Path]:
    """Where this worker writes: ``out`` for the chief (or a single process), a temporary folder for the others
    (a copy of ``copy_from`` when the stage reads an existing run), removed afterwards."""
    if cluster is None or cluster.is_chief:
        yield Path(out)
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"edgepack-worker{cluster.index}-"))
    try:
        target = tmp / "run"
        if copy_from is not None:
            shutil.copytree(copy_from, target)
        yield target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
