"""edgepack search (issue 17): the [search] space, the Pareto front, trials on Ray Tune, and multi-worker training.

Fast tests check the space, the front, the trial recipe and measurement, and bad input. The slow ones run real
searches on a local Ray, on a two-node Ray cluster on 127.0.0.1, kill a trial's worker, interrupt and resume a
search, and train on two tf.distribute workers (inside a network namespace that has only loopback: TensorFlow's
gRPC server listens on every interface, so the namespace is what keeps it on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib

from edgepack import cli
from edgepack.errors import ConfigError
from edgepack.recipe import Recipe, SearchSettings, to_toml
from edgepack.search.pareto import OBJECTIVES, dominates, pareto_front
from edgepack.search.space import suggest, trial_recipe
from edgepack.search.trial import measure

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
EDGEPACK = [sys.executable, "-m", "edgepack"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the Pareto front -----------------------------------------------------------------------------------------


def test_pareto_front_reports_exactly_the_non_dominated_points():
    rng = np.random.default_rng(0)
    points = [{"accuracy": float(rng.choice([0.9, 0.95, 0.97, 0.98])), "latency_us_p50": float(rng.integers(10, 60)),
               "gzip_bytes": int(rng.integers(20_000, 200_000))} for _ in range(200)]  # fmt: skip
    points += [dict(points[3]), dict(points[7])]  # exact ties stay on (or off) the front together
    front = set(pareto_front(points))
    assert 0 < len(front) < len(points)
    for i in front:  # nothing dominates a reported point
        assert not any(dominates(q, points[i]) for q in points), i
    for i in set(range(len(points))) - front:  # every point left out is dominated by a reported one
        assert any(dominates(points[j], points[i]) for j in front), i
    assert (3 in front) == (len(points) - 2 in front)


def test_pareto_front_small_case_by_hand():
    pts = [
        {"accuracy": 0.98, "latency_us_p50": 30.0, "gzip_bytes": 90_000},  # most accurate
        {"accuracy": 0.97, "latency_us_p50": 20.0, "gzip_bytes": 90_000},  # fastest
        {"accuracy": 0.96, "latency_us_p50": 25.0, "gzip_bytes": 25_000},  # smallest
        {"accuracy": 0.96, "latency_us_p50": 26.0, "gzip_bytes": 25_000},  # dominated by the one before
        {"accuracy": 0.95, "latency_us_p50": 40.0, "gzip_bytes": 95_000},  # dominated by all of the first three
    ]
    assert pareto_front(pts) == [0, 1, 2]
    assert pareto_front(pts, {"gzip_bytes": "min"}) == [2, 3]
    assert set(OBJECTIVES) == {"accuracy", "latency_us_p50", "gzip_bytes"}
    with pytest.raises(ValueError, match="expected max or min"):
        pareto_front(pts, {"accuracy": "up"})


# -- the [search] space ---------------------------------------------------------------------------------------


def test_default_space_varies_and_is_written_back_as_toml():
    recipe = Recipe.from_dict({"search": {}})
    assert recipe.search == SearchSettings()
    assert recipe.search.dimensions() >= 4
    text = to_toml(Recipe.from_toml(ROOT / "recipes" / "search-size.toml"))
    assert Recipe.from_dict(tomllib.loads(text)) == Recipe.from_toml(ROOT / "recipes" / "search-size.toml")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"sparsity": [0.9, 0.5]}, "search sparsity: got [0.9, 0.5]; low must be <= high"),
        ({"sparsity": [0.5, 1.2]}, "search sparsity: got 1.2; expected a number in [0.0, 1.0)"),
        ({"clusters": []}, "search clusters: got an empty list"),
        ({"clusters": [1]}, "expected 0 (no clustering) or an integer in 2..256"),
        ({"quantization": ["int4"]}, "search quantization: unknown value 'int4'; choose from qat, int8, dynamic"),
        ({"runtimes": ["keras"]}, "search runtimes: got keras; a search judges shipped files"),
        ({"quantization": ["fp16"], "runtimes": ["onnxruntime"]}, "fp16 exists only as .tflite"),
        ({"m_by_n": [True, False], "layer_sparsity": {"dense": [0.9, 0.95]}}, "does not combine with layer_sparsity"),
        ({"sparsity": [0.8, 0.8], "clusters": [16], "quantization": ["qat"], "runtimes": ["litert"], "int8_layers": ["auto"],
          "prune_epochs": [2]}, "the space is empty"),
        ({"sparsity_max": 0.9}, "unknown key 'sparsity_max'; known keys: sparsity, layer_sparsity, m_by_n"),
    ],
)  # fmt: skip
def test_bad_search_table_is_rejected_with_what_is_allowed(table, message):
    with pytest.raises(ConfigError) as e:
        Recipe.from_dict({"search": table})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_sampled_trials_are_valid_recipes_and_repeat_for_the_same_seed():
    optuna = pytest.importorskip("optuna", reason="the [search] extra is not installed")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = Recipe.from_toml(ROOT / "recipes" / "search-size.toml").search
    space = SearchSettings(**{**space.__dict__, "runtimes": ("litert", "onnxruntime"), "m_by_n": (False, True),
                              "quantization": ("qat", "int8", "dynamic", "fp16"), "layer_sparsity": None})  # fmt: skip

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        configs = []
        for _ in range(40):
            trial = study.ask()
            fixed = suggest(trial, space)
            configs.append({**trial.params, **fixed})  # what OptunaSearch hands a Ray trial
            study.tell(trial, 1.0)
        return configs

    configs = draw(0)
    assert configs == draw(0)
    assert configs != draw(1)
    base = Recipe.from_toml(ROOT / "recipes" / "search-size.toml")
    seen = set()
    for c in configs:
        r = trial_recipe(base, c, max_drop=0.5)
        assert Recipe.from_dict(tomllib.loads(to_toml(r))) == r  # what best/*.toml holds reads back the same
        fmt = "tflite" if c["runtime"] == "litert" else "onnx"
        quant = c.get(f"quantization_{fmt}")
        assert [f.value for f in r.export.formats] == [fmt]
        assert r.bench.runtimes[0].value == c["runtime"]
        assert (r.qat is not None) == (quant == "qat")
        assert quant != "fp16" or fmt == "tflite"  # fp16 exists only as .tflite
        assert (r.prune is not None and r.prune.m_by_n == "2:4") == c["m_by_n"]
        assert (r.cluster is not None) == (c["clusters"] > 0)
        assert ("int8_layers" in c) == (quant == "int8")  # the latency plan is drawn only for post-training int8
        seen.add((c["runtime"], quant, c["m_by_n"]))
    assert len(seen) >= 6  # the sampler explores the conditional space, not one corner


def _fake_run(root: Path, qat: bool) -> Path:
    """A run directory as `edgepack run` leaves it: manifest artifacts and bench rows (no model files needed)."""
    arts = [{"name": "baseline", "stage": "train", "format": "keras", "precision": "fp32", "parent": None,
             "path": "models/baseline.keras", "metrics": {"accuracy": 0.975}, "settings": {}},
            {"name": "pruned", "stage": "prune", "format": "keras", "precision": "fp32", "parent": "baseline",
             "path": "models/pruned.keras", "metrics": {"accuracy": 0.97}, "settings": {}},
            {"name": "pruned-tflite-int8", "stage": "export", "format": "tflite", "precision": "int8",
             "parent": "pruned", "path": "export/pruned-tflite-int8.tflite", "settings": {},
             "metrics": {"gzip_bytes": 40_000, "size_bytes": 240_000, "gzip_ratio_vs_baseline_tflite": 20.9}},
            {"name": "qat-tflite-int8", "stage": "export", "format": "tflite", "precision": "int8", "parent": "qat",
             "path": "export/qat-tflite-int8.tflite", "settings": {"from_qat": True},
             "metrics": {"gzip_bytes": 30_000, "size_bytes": 240_000, "gzip_ratio_vs_baseline_tflite": 27.8}},
            # a mixed pruned-tflite-int8 gets an all-int8 twin for microcontrollers: not the trial's file
            {"name": "pruned-tflite-int8-mcu", "stage": "export", "format": "tflite", "precision": "int8",
             "parent": "pruned", "path": "export/pruned-tflite-int8-mcu.tflite", "settings": {"mcu": True},
             "metrics": {"gzip_bytes": 39_000, "size_bytes": 239_000, "gzip_ratio_vs_baseline_tflite": 21.4}}]  # fmt: skip
    rows = [{"artifact": a["name"], "runtime": rt, "threads": t, "batch": b, "accuracy": acc,
             "latency_us": {"p50": lat * t * b}}
            for a, acc, lat in ((arts[2], 0.971, 30.0), (arts[3], 0.962, 25.0))
            for rt in ("litert", "keras") for t in (1, 2) for b in (1, 32)]  # fmt: skip
    (root / "bench").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"artifacts": arts}))
    (root / "bench" / "results.json").write_text(json.dumps({"results": rows}))
    return root


def test_measure_takes_the_chosen_files_accuracy_in_its_runtime_latency_and_size(tmp_path):
    run = _fake_run(tmp_path / "run", qat=False)
    ptq = measure(run, {"runtime": "litert", "quantization_tflite": "int8", "threads": 1}, max_drop=0.5)
    assert ptq["artifact"] == "pruned-tflite-int8"
    assert ptq["accuracy"] == 0.971
    assert ptq["latency_us_p50"] == 30.0
    assert ptq["drop_points"] == pytest.approx(0.4)
    assert ptq["within_budget"]
    assert ptq["gzip_bytes"] == 40_000
    qat = measure(run, {"runtime": "litert", "quantization_tflite": "qat", "threads": 2}, max_drop=0.5)
    assert qat["artifact"] == "qat-tflite-int8"
    assert qat["latency_us_p50"] == 50.0
    assert qat["drop_points"] == pytest.approx(1.3)
    assert not qat["within_budget"]


# -- bad input on the command line: one line, exit 2, nothing written -----------------------------------------


def _search_args(out: Path, *extra: str) -> list[str]:
    return ["search", "--out", str(out), "--objective", "size", "--max-drop", "0.5", "--trials", "2", *extra]


@pytest.mark.parametrize(
    ("extra", "toml", "message"),
    [
        (["--trials", "0"], None, "--trials: got 0; expected an integer >= 1"),
        (["--objective", "speed"], None, "--objective: unknown value 'speed'; choose from latency, size, both"),
        (["--timeout", "0"], None, "--timeout: got 0.0; expected seconds > 0"),
        (["--max-drop", "-1"], None, "--max-drop: got -1.0; expected points in [0, 100]"),
        ([], "[search]\nclusterz = [8]\n", "unknown key 'clusterz'; known keys: sparsity"),
        ([], "[search]\nsparsity = [0.95, 0.5]\n", "low must be <= high"),
        ([], "[search]\nsparsity = [0.5, 0.5]\nclusters = [0]\nquantization = ['int8']\nint8_layers = ['all']\n"
             "runtimes = ['litert']\nprune_epochs = [2]\n", "the space is empty"),
        (["--address", "ADDR"], None, "no Ray cluster reachable there"),
    ],
)  # fmt: skip
def test_search_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, toml, message):
    out = tmp_path / "out"
    args = _search_args(out)
    extra = [f"127.0.0.1:{_free_port()}" if e == "ADDR" else e for e in extra]  # a port nothing listens on
    args += extra  # later flags win in argparse
    if toml is not None:
        (tmp_path / "r.toml").write_text(toml)
        args.insert(1, str(tmp_path / "r.toml"))
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgepack: error: ")
    assert message in err
    assert "\n" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["r.toml"] if toml else [])


def test_search_refuses_an_out_dir_that_is_not_its_own(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(_search_args(out)) == 2
    assert "is not an edgepack search directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


# -- multi-worker settings --------------------------------------------------------------------------------------


def test_worker_flags_and_tf_config_make_the_cluster():
    from edgepack.distributed import parse_cluster

    assert parse_cluster(None, None, environ={}) is None  # one process: unchanged
    c = parse_cluster("127.0.0.1:2001,127.0.0.1:2002", 1, environ={})
    assert c.workers == ("127.0.0.1:2001", "127.0.0.1:2002")
    assert not c.is_chief
    assert c.tf_config() == {"cluster": {"worker": list(c.workers)}, "task": {"type": "worker", "index": 1}}
    env = {"TF_CONFIG": json.dumps(c.tf_config())}
    assert parse_cluster(None, None, environ=env) == c


@pytest.mark.parametrize(
    ("workers", "index", "tf_config", "message"),
    [
        ("127.0.0.1:2001,127.0.0.1:2002", 2, None, "--worker-index: got 2; expected 0..1 for 2 workers"),
        ("127.0.0.1:2001,127.0.0.1:2002", None, None, "give --worker-index I too"),
        (None, 0, None, "--worker-index: only applies with --workers"),
        ("127.0.0.1", 0, None, "--workers: got '127.0.0.1'; expected HOST:PORT"),
        ("127.0.0.1:2001,127.0.0.1:2001", 0, None, "each worker needs its own host:port"),
        (None, None, "{not json", "TF_CONFIG: got '{not json'; expected JSON"),
        (None, None, '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "ps", "index": 0}}',
         "uses only 'worker' tasks"),
    ],
)  # fmt: skip
def test_bad_worker_settings_are_rejected(workers, index, tf_config, message):
    from edgepack.distributed import parse_cluster

    with pytest.raises(ConfigError) as e:
        parse_cluster(workers, index, environ={"TF_CONFIG": tf_config} if tf_config else {})
    assert message in str(e.value)


def test_train_with_bad_workers_exits_2_before_anything_loads(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), "--workers", "127.0.0.1:1,127.0.0.1:2", "--worker-index", "5"]) == 2
    assert "--worker-index: got 5" in capsys.readouterr().err
    assert not out.exists()


# -- slow: real searches ------------------------------------------------------------------------------------------

SMALL_SPACE = """
[train]
epochs = 1
[bench]
min_time = 0.05
windows = 3
[search]
sparsity = [0.5, 0.9]
clusters = [0]
quantization = ["int8", "dynamic"]
int8_layers = ["all"]
runtimes = ["litert"]
prune_epochs = [1]
calibration_samples = [50]
seed = 3
"""


@pytest.fixture(scope="module")
def small_search(tmp_path_factory):
    """600 train / 200 test embedded digits as an .npz, and a recipe with a small [search] space (1 epoch)."""
    from edgepack.data.loaders import _mnist_5k

    root = tmp_path_factory.mktemp("search")
    x, y, _ = _mnist_5k()
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:600], idx[600:800]
    np.savez(root / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    (root / "space.toml").write_text(SMALL_SPACE)
    return root


def _search_cmd(root: Path, out: Path, trials: int, *extra: str) -> list[str]:
    return [*EDGEPACK, "search", str(root / "space.toml"), "--data", str(root / "digits.npz"), "--out", str(out),
            "--objective", "size", "--max-drop", "100", "--trials", str(trials), "--json", *extra]  # fmt: skip


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 600) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found
        assert proc.poll() is None, f"the search ended (exit {proc.returncode}) before {pattern} appeared"
        time.sleep(1)
    raise AssertionError(f"{pattern} did not appear in {timeout} s")


def _trials(out: Path) -> list[dict]:
    return json.loads((out / "trials.json").read_text())["trials"]


def _measured(out: Path) -> list[tuple]:
    """Per trial what does not depend on the machine's load: the drawn values, accuracy and size of the file."""
    return sorted((json.dumps(t["config"], sort_keys=True), t["metrics"]["accuracy"], t["metrics"]["gzip_bytes"])
                  for t in _trials(out) if t["status"] == "done")  # fmt: skip


@pytest.mark.slow
def test_search_resumes_after_ctrl_c_and_its_best_recipe_reproduces_the_file(small_search, tmp_path):
    out = tmp_path / "search"
    proc = subprocess.Popen(_search_cmd(small_search, out, 3), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        first = _wait_for("trials/*/trial.json", out, proc)[0]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    measured_at = first.stat().st_mtime_ns
    again = subprocess.run(_search_cmd(small_search, out, 3), env=_env(), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    trials = _trials(out)
    assert summary["done"] == 3
    assert summary["failed"] == 0
    assert len(trials) == 3
    assert first.stat().st_mtime_ns == measured_at  # the trial measured before Ctrl-C was not rerun
    done = [t["metrics"] for t in trials]
    front = [t["metrics"] for t in trials if t["pareto"]]
    assert front
    assert all(not any(dominates(q, p) for q in done) for p in front)
    page = (out / "report.html").read_text()
    assert "Pareto front" in page
    assert "data:image/png;base64," in page
    assert (out / "plots" / "pareto.png").is_file()

    best = summary["best"]["size"]
    assert best["gzip_bytes"] == min(m["gzip_bytes"] for m in done)
    assert Path(best["file"]).read_bytes()[4:8] == b"TFL3"
    rerun = tmp_path / "rerun"
    made = subprocess.run([*EDGEPACK, "run", best["recipe"], "--out", str(rerun), "-q"], env=_env(),
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    manifest = json.loads((rerun / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["name"] == best["artifact"])
    rows = json.loads((rerun / "bench" / "results.json").read_text())["results"]
    row = next(r for r in rows if r["artifact"] == best["artifact"] and r["runtime"] == best["runtime"]
               and r["batch"] == 1)  # fmt: skip
    assert art["metrics"]["gzip_bytes"] == best["gzip_bytes"]
    assert row["accuracy"] == best["accuracy"]


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NETNS_REASON = "needs `unshare --net` (root): Ray's GCS and TF's gRPC servers listen on every interface"


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason=NETNS_REASON)
def test_search_on_a_two_node_cluster_gives_the_local_results(small_search, tmp_path):
    local = tmp_path / "local"
    run = subprocess.run(_search_cmd(small_search, local, 2), env=_env(), capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-2000:]

    # Two nodes (`ray start --head`, then `ray start --address`) in a network namespace that has only loopback,
    # with their own auth token (not the shared ~/.ray/auth_token); each `ray start --block` is ended by its pid,
    # which stops the processes that node started.
    import secrets

    temp_dir = tempfile.mkdtemp(prefix="epray", dir="/tmp")  # short: Ray's socket paths live under it
    token = Path(temp_dir) / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    remote = tmp_path / "remote"
    ray = Path(sys.executable).parent / "ray"
    node = f"{ray} start --block --node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats"
    search = " ".join(_search_cmd(small_search, remote, 2, "--address", "127.0.0.1:6390"))
    script = f"""set -u
ip link set lo up
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token}
{node} --head --port=6390 --include-dashboard=false --temp-dir={temp_dir} > {temp_dir}/head.log 2>&1 & head=$!
for i in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/6390) 2>/dev/null && break; sleep 1; done
{node} --address=127.0.0.1:6390 > {temp_dir}/node.log 2>&1 & other=$!
sleep 10
{search} > {temp_dir}/out.json 2> {temp_dir}/err.txt; rc=$?
kill $other; wait $other; kill $head; wait $head
exit $rc
"""  # fmt: skip
    try:
        run = subprocess.run(["unshare", "--net", "bash", "-c", script], env=_env(), capture_output=True, text=True,
                             timeout=1500)  # fmt: skip
        assert run.returncode == 0, (Path(temp_dir) / "err.txt").read_text()[-2000:]
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert len(_measured(local)) == 2
    assert _measured(remote) == _measured(local)  # same seeds: same recipes drawn, same accuracy and size


@pytest.mark.slow
def test_a_killed_trial_worker_is_recorded_failed_and_the_search_finishes(small_search, tmp_path):
    out = tmp_path / "search"
    proc = subprocess.Popen(_search_cmd(small_search, out, 2), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        pid_file = _wait_for("trials/*/pid", out, proc)[0]
        worker, child = (int(v) for v in pid_file.read_text().split())
        time.sleep(5)  # mid-run: the trial's `edgepack run` is loading TensorFlow or training
        os.kill(worker, signal.SIGKILL)
        stdout, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    summary = json.loads(stdout)
    assert summary["done"] == 1
    assert summary["failed"] == 1
    trials = {t["dir"]: t for t in _trials(out)}
    killed = trials[str(pid_file.parent)]
    assert killed["status"] == "failed"
    assert killed["error"]
    assert next(t for t in trials.values() if t is not killed)["status"] == "done"
    with pytest.raises(ProcessLookupError):  # the trial's training died with its worker
        os.kill(child, 0)


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason=NETNS_REASON)
def test_two_tf_distribute_workers_reach_single_worker_accuracy_and_pruning_sparsity(tmp_path):
    from edgepack.data.loaders import _mnist_5k

    x, y, _ = _mnist_5k()
    idx = np.random.default_rng(1).permutation(len(y))
    tr, te = idx[:1500], idx[1500:2500]
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    ep = " ".join([sys.executable, "-m", "edgepack"])
    workers = "127.0.0.1:23456,127.0.0.1:23457"  # a private network namespace: these ports are ours
    train = f"{ep} train --data {data} --epochs 3 -q"
    compress = "compress --prune 0.8 --epochs 2 -q"
    script = f"""set -e
ip link set lo up
{train} --out {tmp_path}/mw --workers {workers} --worker-index 0 & a=$!
{train} --out {tmp_path}/unused --workers {workers} --worker-index 1 & b=$!
wait $a; wait $b
{ep} {compress} {tmp_path}/mw --workers {workers} --worker-index 0 & a=$!
{ep} {compress} {tmp_path}/mw --workers {workers} --worker-index 1 & b=$!
wait $a; wait $b
"""  # fmt: skip
    multi = subprocess.run(["unshare", "--net", "bash", "-c", script], env=_env(), capture_output=True, text=True,
                           timeout=1500)  # fmt: skip
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert not (tmp_path / "unused").exists()  # only the chief writes a run directory
    single = subprocess.run(["bash", "-c", f"set -e; {train} --out {tmp_path}/one; {ep} {compress} {tmp_path}/one"],
                            env=_env(), capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    def metrics(run: str) -> dict[str, dict]:
        manifest = json.loads((tmp_path / run / "manifest.json").read_text())
        return {a["name"]: a["metrics"] for a in manifest["artifacts"]}

    mw, one = metrics("mw"), metrics("one")
    assert abs(mw["baseline"]["accuracy"] - one["baseline"]["accuracy"]) <= 0.01, (mw["baseline"], one["baseline"])
    assert mw["pruned"]["sparsity"] >= 0.8 - 0.01  # the target is reached under the strategy
    assert abs(mw["pruned"]["accuracy"] - one["pruned"]["accuracy"]) <= 0.01
