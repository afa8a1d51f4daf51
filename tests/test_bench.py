"""The benchmark harness measures correctly: timing, percentiles, the compute floor, merged reports, the HTML page.

These tests check the harness, not the machine: figures come from `make bench`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.bench.floor import floor_us, matmul_model, measure_floor
from edgepack.bench.report import build_blocks, headline_figures, pareto_front, recommend, to_html
from edgepack.cli import main
from edgepack.recipe import BenchSettings
from edgepack.timing import time_call

SEED_CNN_MACS = 2_631_040  # DESIGN.md: 2.63 M multiply-adds for 28x28x1 input, 10 classes


def test_sleep_based_fake_model_measures_the_time_it_sleeps_within_10_percent():
    sleep_s = 0.005

    start = time.perf_counter()
    timing = time_call(lambda: time.sleep(sleep_s), min_time=0.1, windows=3, warmup_time=0.01)
    elapsed = time.perf_counter() - start

    assert timing.p50 == pytest.approx(sleep_s * 1e6, rel=0.10)
    # throughput is calls per second of call time: the inverse of the mean call (exactly, for the median of 3
    # windows); a sleep never undershoots, so it cannot pass 1/sleep_s, and the calls fit in the wall time taken
    assert timing.throughput_per_s == pytest.approx(1e6 / timing.mean, rel=1e-9)
    assert timing.throughput_per_s <= 1 / sleep_s
    assert timing.n >= 3 * 15  # each 0.1 s window holds ~20 calls of 5 ms
    assert timing.n * sleep_s <= elapsed


def test_latency_percentiles_are_ordered_and_counted():
    rng = np.random.default_rng(0)
    delays = iter(rng.uniform(0.0005, 0.003, 10_000))

    timing = time_call(lambda: time.sleep(next(delays)), min_time=0.05, windows=3, warmup_time=0.0)

    assert timing.min <= timing.p50 <= timing.p90 <= timing.p99 <= timing.max
    assert timing.p90 > timing.p50  # the delays are spread: an identical value everywhere would be a bug
    assert timing.windows == 3
    assert len(timing.window_p50) == 3
    assert timing.n >= 3 * 15  # 50 ms windows of 0.5-3 ms calls


def test_interleaved_timing_of_two_calls_measures_each_and_their_ratio():
    from edgepack.timing import time_calls

    t = time_calls({"short": lambda: time.sleep(0.002), "long": lambda: time.sleep(0.004)}, min_time=0.05, windows=3,
                   warmup_time=0.0)  # fmt: skip
    assert set(t) == {"short", "long"}
    assert 2000 <= t["short"].p50 < 2000 * 1.5  # sleep overshoots, never undershoots
    assert t["long"].p50 / t["short"].p50 == pytest.approx(2.0, rel=0.25)
    assert t["short"].windows == t["long"].windows == 3


def _spin(us: float) -> None:
    end = time.perf_counter_ns() + int(us * 1000)
    while time.perf_counter_ns() < end:
        pass


def test_paired_ratio_of_two_busy_waits_is_their_length_ratio():
    from edgepack.timing import paired_ratio

    assert paired_ratio(lambda: _spin(300), lambda: _spin(100), pairs=400, warmup=5) == pytest.approx(3.0, rel=0.05)
    assert paired_ratio(lambda: _spin(100), lambda: _spin(300), pairs=400, warmup=5) == pytest.approx(1 / 3, rel=0.05)
    with pytest.raises(ValueError, match="pairs 0"):
        paired_ratio(lambda: None, lambda: None, pairs=0)


def test_batch_size_scales_throughput_not_latency():
    timing = time_call(lambda: time.sleep(0.002), batch=32, min_time=0.05, windows=3, warmup_time=0.0)

    assert timing.p50 == pytest.approx(2000, rel=0.5)  # the call's latency, not divided by the batch
    assert timing.throughput_per_s == pytest.approx(32 * 1e6 / timing.mean, rel=1e-9)  # samples per second
    assert timing.throughput_per_s <= 32 / 0.002


def test_hand_built_integer_gemm_graph_computes_the_true_product():
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 16), dtype=np.uint8)
    b = rng.integers(-128, 128, (16, 4), dtype=np.int8)

    sess = ort.InferenceSession(
        matmul_model("MatMulInteger", "uint8", b, 8, "int32"), providers=["CPUExecutionProvider"]
    )
    (y,) = sess.run(None, {"A": a})

    np.testing.assert_array_equal(y, a.astype(np.int32) @ b.astype(np.int32))


@pytest.fixture(scope="module")
def floor():
    return measure_floor(min_time=0.05, windows=2, sizes=(256,))


def test_floor_rates_are_positive_and_int8_uses_the_int8_rate(floor):
    assert floor["fp32_macs_per_s"] > 1e8
    assert floor["int8_macs_per_s"] > 1e8
    assert floor["blas"] == [] or all(b["num_threads"] == 1 for b in floor["blas"])  # pinned to one core
    fp32 = floor_us(SEED_CNN_MACS, "fp32", 1, 1, floor)
    int8 = floor_us(SEED_CNN_MACS, "int8", 1, 1, floor)
    assert fp32 == pytest.approx(SEED_CNN_MACS / floor["fp32_macs_per_s"] * 1e6)
    assert int8 == pytest.approx(SEED_CNN_MACS / floor["int8_macs_per_s"] * 1e6)
    assert floor_us(SEED_CNN_MACS, "fp32", 32, 2, floor) == pytest.approx(fp32 * 16)


@pytest.fixture(scope="module")
def tflite_model(tiny_run, tiny_data, tmp_path_factory):
    """The tiny run's baseline as a float .tflite, with eval.npz beside it (as an export folder has)."""
    from edgepack.tf import keras, tf

    model = keras.models.load_model(tiny_run.file(tiny_run.require("baseline", name="baseline")))
    out = tmp_path_factory.mktemp("export")
    path = out / "baseline-tflite-fp32.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    np.savez(out / "eval.npz", x=tiny_data.x_test, y=tiny_data.y_test, class_names=np.array(tiny_data.class_names))
    return path


@pytest.fixture(scope="module")
def tflite_results(tflite_model, floor):
    from edgepack.bench.core import run_bench

    settings = BenchSettings(threads=(1,), batch=(1, 8), min_time=0.05, windows=2, label="test")
    return run_bench([str(tflite_model)], settings, ("litert",), floor=floor)


ROW_FIELDS = ("artifact", "format", "precision", "runtime", "threads", "batch", "latency_us", "throughput_per_s",
              "cold_start_ms", "peak_rss_mb", "accuracy", "size_bytes", "gzip_bytes", "params", "macs", "sparsity",
              "parity", "floor_us", "pct_of_floor")  # fmt: skip


def test_bench_rows_carry_every_schema_field_and_the_true_multiply_adds(tflite_results, tflite_model):
    rows = tflite_results["results"]

    assert [(r["runtime"], r["batch"]) for r in rows] == [("litert", 1), ("litert", 8)]
    for r in rows:
        assert set(ROW_FIELDS) <= set(r)
        assert set(r["latency_us"]) == {"p50", "p90", "p99", "mean", "std", "min", "max", "n"}
        assert r["macs"] == SEED_CNN_MACS
        assert 0.5 < r["accuracy"] <= 1.0  # measured in LiteRT on the 200 eval digits
        assert r["size_bytes"] == tflite_model.stat().st_size
        assert 0 < r["gzip_bytes"] < r["size_bytes"]
        assert r["cold_start_ms"] > 0
        assert r["peak_rss_mb"] > 10
        # latency_us is the user's call, predict() from uint8 pixels; the engine call alone is kept beside it
        assert (r["call"], r["engine_call"]) == ("predict(uint8)", "run_prepared")
        assert set(r["engine_latency_us"]) == set(r["latency_us"])
        assert 0 < r["engine_latency_us"]["min"] <= r["engine_latency_us"]["p50"]
        assert r["predict_over_engine"] == pytest.approx(r["latency_us"]["p50"] / r["engine_latency_us"]["p50"])
        assert "input:" in r["plan"]
    assert tflite_results["machine"]["label"] == "test"


def test_floor_is_below_every_measured_latency(tflite_results):
    for r in tflite_results["results"]:
        assert 0 < r["floor_us"] < r["latency_us"]["min"]
        assert 0 < r["pct_of_floor"] < 100


def test_a_row_faster_than_its_floor_makes_the_bench_measure_the_floor_again(tflite_model, floor):
    from edgepack.bench.core import run_bench

    slow = {**floor, "fp32_macs_per_s": 1e6, "int8_macs_per_s": 1e6}  # a floor "measured" on a stalled core
    settings = BenchSettings(threads=(1,), batch=(1,), min_time=0.02, windows=1, label="test")
    results = run_bench([str(tflite_model)], settings, ("litert",), floor=slow)

    again = results["floor"]["remeasured"]
    assert again["because"] == ["baseline-tflite-fp32 litert t1 b1"]
    assert again["first"]["fp32"] == 1e6
    assert again["second"]["fp32"] > 1e8
    assert results["floor"]["fp32_macs_per_s"] == again["second"]["fp32"]
    (row,) = results["results"]
    assert 0 < row["floor_us"] < row["latency_us"]["min"]
    assert not any(w.startswith("FLOOR BEATEN") for w in results["warnings"])


# -- reports ---------------------------------------------------------------------------------------------------


def _row(artifact, runtime, precision, p50, accuracy, fmt=None, threads=1, batch=1, parity=True):
    fmt = fmt or {"litert": "tflite", "onnxruntime": "onnx", "keras": "keras"}[runtime]
    lat = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "mean": p50, "std": 1.0, "min": p50 * 0.9,
           "max": p50 * 2, "n": 100}  # fmt: skip
    return {"artifact": artifact, "format": fmt, "precision": precision, "runtime": runtime, "threads": threads,
            "batch": batch, "call": "model(x)" if fmt == "keras" else "run_prepared", "latency_us": lat,
            "throughput_per_s": 1e6 / p50, "cold_start_ms": 300.0, "peak_rss_mb": 80.0, "accuracy": accuracy,
            "size_bytes": 200_000, "gzip_bytes": 150_000, "params": 225_034, "macs": SEED_CNN_MACS, "sparsity": 0.0,
            "parity": None if fmt == "keras" else {"passed": parity, "max_abs_diff": 1e-6, "top1_agreement": 1.0},
            "floor_us": 12.0, "floor_ratio": p50 / 12.0, "pct_of_floor": 1200 / p50}  # fmt: skip


def _results(label, scale=1.0, cpu="AMD EPYC"):
    rows = [
        _row("baseline", "keras", "fp32", 5000 * scale, 0.980),
        _row("baseline-tflite-fp32", "litert", "fp32", 60 * scale, 0.980),
        _row("baseline-tflite-int8", "litert", "int8", 25 * scale, 0.975),
        _row("baseline-onnx-int8", "onnxruntime", "int8", 20 * scale, 0.940),  # fastest, but 4 points worse
        _row("baseline-tflite-int8", "litert", "int8", 20 * scale, 0.975, threads=2),
    ]
    machine = {"label": label, "cpu_model": cpu, "arch": "x86_64", "isa": ["avx2"], "cores": 2, "os": "Linux",
               "python": "3.11", "libraries": {"onnxruntime": "1.32.0"}, "emulated": False}  # fmt: skip
    return {"machine": machine, "floor": {"fp32_macs_per_s": 5e10, "int8_macs_per_s": 2e11}, "results": rows}


def test_recommended_file_is_the_fastest_within_the_accuracy_budget():
    rows = _results("a")["results"]

    assert recommend(rows, max_drop=1.0).row["artifact"] == "baseline-tflite-int8"
    assert recommend(rows, max_drop=5.0).row["artifact"] == "baseline-onnx-int8"
    assert recommend(rows, max_drop=1.0).reference_accuracy == pytest.approx(0.980)
    assert recommend(rows, max_drop=1.0).row["threads"] == 1  # the headline is batch 1, one thread


def test_pareto_front_keeps_only_undominated_points():
    points = [(10.0, 0.90), (20.0, 0.95), (30.0, 0.93), (5.0, 0.80), (40.0, 0.99)]

    assert pareto_front(points) == [3, 0, 1, 4]


def test_two_results_from_different_machines_merge_into_one_report_with_two_columns(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_results("x86-box")))
    b.write_text(json.dumps(_results("pi5", scale=4.0, cpu="ARM implementer 0x41 part 0xd0b")))

    code = main(["report", str(a), str(b), "--out", str(tmp_path / "cmp.md")])
    md = capsys.readouterr().out

    assert code == 0
    header = next(line for line in md.splitlines() if line.startswith("| file | runtime | threads | batch"))
    assert "p50 x86-box" in header
    assert "p50 pi5" in header
    row = next(line for line in md.splitlines() if line.startswith("| baseline-tflite-int8 | litert | 1 | 1 |"))
    assert "25.0 µs" in row
    assert "100.0 µs" in row
    assert "| CPU | AMD EPYC | ARM implementer 0x41 part 0xd0b |" in md
    assert md.count("Recommended file: **baseline-tflite-int8**") == 2
    assert "p50 pi5" in (tmp_path / "cmp.md").read_text()


def test_report_exits_1_when_no_file_is_within_the_budget(tmp_path, capsys):
    res = _results("a")
    for r in res["results"]:
        if r["format"] != "keras":
            r["accuracy"] = 0.5
    (tmp_path / "r.json").write_text(json.dumps(res))

    code = main(["report", str(tmp_path / "r.json"), "--out", str(tmp_path / "r.md")])

    assert code == 1
    assert "Recommended file: none" in capsys.readouterr().out


def test_bench_rejects_an_unknown_runtime_with_exit_2_and_writes_nothing(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")

    code = main(["bench", str(model), "--runtimes", "tensorrt", "--out", str(tmp_path / "r.json")])

    assert code == 2
    assert "tensorrt" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]  # fmt: skip


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_html_report_renders_its_plots_as_images_in_headless_chromium(tmp_path):
    from PIL import Image

    page = to_html(build_blocks([_results("a"), _results("b", scale=2.0)]))
    assert "<img" in page
    assert 'src="data:image/png;base64,' in page
    assert "http" not in page.split("<body>")[1]
    probe = page.replace("</body>", "<script>window.addEventListener('load', () => document.body.setAttribute("
                         "'data-imgs', [...document.images].map(i => i.complete + ':' + i.naturalWidth).join(',')))"
                         "</script></body>")  # fmt: skip
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "probe.html").write_text(probe)
    chrome = [_chromium(), *CHROME_FLAGS]

    dom = subprocess.run([*chrome, f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=5000", "--dump-dom",
                          (tmp_path / "probe.html").as_uri()], capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    shot = tmp_path / "shot.png"
    subprocess.run([*chrome, f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1400,4000", f"--screenshot={shot}",
                    (tmp_path / "report.html").as_uri()], capture_output=True, timeout=120)  # fmt: skip

    widths = dom.split('data-imgs="')[1].split('"')[0].split(",")
    assert len(widths) == 3
    assert all(w.startswith("true:") and int(w.split(":")[1]) > 400 for w in widths)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = (np.abs(pixels - [31, 119, 180]).sum(axis=2) < 30).sum()  # matplotlib's C0 bars and markers
    grey = (np.abs(pixels - [191, 191, 191]).sum(axis=2) < 8).sum()  # the size plot's on-disk bars
    assert blue > 2000
    assert grey > 2000


def test_bench_and_report_modules_import_no_tensorflow_or_matplotlib():
    code = ("import sys, edgepack.bench.core, edgepack.bench.report, edgepack.bench.floor, edgepack.timing, "
            "edgepack.bench.coldstart, edgepack.bench.stats; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'matplotlib', 'onnx') if m in sys.modules))")  # fmt: skip
    src = str(Path(__file__).resolve().parents[1] / "src")

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_headline_figures_compare_the_recommended_file_with_floor_keras_and_fp32():
    rows = _results("a")["results"] + [_row("baseline-onnx-fp32", "onnxruntime", "fp32", 40, 0.980)]
    for r in rows:
        if r["artifact"] == "baseline-tflite-int8":
            r["gzip_bytes"] = 50_000  # fp32 files have 150 000

    f = headline_figures(rows)

    assert f["recommended"] == "baseline-tflite-int8"
    assert f["best_p50_over_floor"] == pytest.approx(25 / 12)
    assert f["ort_int8_p50_over_fp32_p50"] == pytest.approx(20 / 40)
    assert f["keras_model_call_over_best"] == pytest.approx(5000 / 25)
    assert f["smallest_within_half_point"] == "baseline-tflite-int8"
    assert f["fp32_tflite_gzip_over_smallest_gzip"] == pytest.approx(3.0)


def test_bench_records_load_governor_floor_spread_and_accuracy_intervals(tflite_results):
    from edgepack.bench.stats import wilson_interval

    machine = tflite_results["machine"]
    for when in ("state_start", "state_end"):
        assert len(machine[when]["load_avg"]) == 3
        assert "governor" in machine[when]  # None where /sys does not expose it
    floor = tflite_results["floor"]
    assert 0 <= floor["spread"] == max(floor["fp32_spread"], floor["int8_spread"])
    assert all(2 <= c["windows"] <= 12 for c in floor["fp32_candidates"] + floor["int8_candidates"])
    assert isinstance(tflite_results["warnings"], list)
    for r in tflite_results["results"]:
        lo, hi = r["accuracy_ci95"]
        assert (lo, hi) == pytest.approx(wilson_interval(r["accuracy"], r["n_eval"]), abs=1e-5)
        assert lo < r["accuracy"] < hi
