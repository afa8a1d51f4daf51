"""The report decides at a glance (issue 19): the decision card on the first screen, accuracy intervals and the one
budget rule, measurement warnings, non-overlapping plot labels; the first screen read by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.bench.floor import measurement_warnings
from edgepack.bench.report import build_blocks, recommend, to_html, to_markdown
from edgepack.bench.stats import wilson_interval, within_budget


def _row(artifact, runtime, precision, p50, accuracy, threads=1, gzip=150_000, source="baseline", n_eval=1000,
         fmt=None, mixed=False):  # fmt: skip
    fmt = fmt or {"litert": "tflite", "onnxruntime": "onnx", "keras": "keras"}[runtime]
    lat = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "mean": p50, "std": 1.0, "min": p50 * 0.9,
           "max": p50 * 2, "n": 100}  # fmt: skip
    ci = [round(v, 5) for v in wilson_interval(accuracy, n_eval)] if n_eval else None
    return {"artifact": artifact, "path": f"/runs/demo/export/{artifact}.{fmt}", "format": fmt,
            "precision": precision, "runtime": runtime, "threads": threads, "batch": 1, "source": source,
            "call": "model(x)" if fmt == "keras" else "run_prepared", "latency_us": lat, "throughput_per_s": 1e6 / p50,
            "cold_start_ms": 300.0, "peak_rss_mb": 80.0, "accuracy": accuracy, "n_eval": n_eval, "accuracy_ci95": ci,
            "size_bytes": gzip * 2, "gzip_bytes": gzip, "params": 225_034, "macs": 2_631_040, "sparsity": 0.0,
            "parity": None if fmt == "keras" else {"passed": True, "max_abs_diff": 1e-6, "top1_agreement": 1.0},
            "floor_us": 5.0, "floor_ratio": p50 / 5.0, "pct_of_floor": 500 / p50, "mixed": mixed,
            "float_layers": ["conv1"] if mixed else []}  # fmt: skip


def _results(load=(0.2, 0.2, 0.2), spread=0.01):
    rows = [
        _row("baseline", "keras", "fp32", 5000, 0.963, source=None),
        _row("pruned", "keras", "fp32", 5000, 0.968, source=None),
        _row("baseline-tflite-fp32", "litert", "fp32", 60, 0.963, gzip=830_000),
        _row("baseline-onnx-fp32", "onnxruntime", "fp32", 40, 0.963, gzip=820_000),
        _row("pruned-tflite-int8", "litert", "int8", 21, 0.961, gzip=80_000, source="pruned", mixed=True),
        _row("pruned-tflite-int8", "litert", "int8", 20.5, 0.961, threads=2, gzip=80_000, source="pruned", mixed=True),
        _row("pruned-onnx-int8", "onnxruntime", "int8", 30, 0.962, gzip=79_000, source="pruned"),
        _row("qat-tflite-int8", "litert", "int8", 24, 0.960, gzip=73_000, source="qat"),
        _row("qat-onnx-int8", "onnxruntime", "int8", 15, 0.90, gzip=72_000, source="qat"),  # fast, 6 points down
    ]
    machine = {"label": "xeon", "cpu_model": "Intel(R) Xeon(R) Processor", "arch": "x86_64", "isa": ["avx2"],
               "cores": 2, "os": "Linux", "python": "3.11", "libraries": {"onnxruntime": "1.32.0"}, "emulated": False,
               "state_start": {"load_avg": list(load), "governor": None},
               "state_end": {"load_avg": list(load), "governor": None}}  # fmt: skip
    floor = {"fp32_macs_per_s": 1e11, "int8_macs_per_s": 5e11, "spread": spread}
    return {"machine": machine, "floor": floor, "warnings": measurement_warnings(machine, floor), "results": rows}


def test_wilson_interval_matches_the_textbook_value_and_narrows_with_more_images():
    lo, hi = wilson_interval(0.95, 1000)
    assert (round(lo, 4), round(hi, 4)) == (0.9347, 0.9619)
    lo2, hi2 = wilson_interval(0.95, 10_000)
    assert lo < lo2 < 0.95 < hi2 < hi
    assert wilson_interval(0.0, 10)[0] == 0.0


def test_budget_counts_a_file_whose_interval_reaches_the_line_and_one_image_does_not_decide():
    # reference 96.3%, budget 0.5 point: the line is 95.8%; 95.7% on 1000 images reaches it within its interval
    assert within_budget(0.957, 1000, 0.963, 0.5)
    assert not within_budget(0.957, 1_000_000, 0.963, 0.5)  # a million images: 95.7% is really below the line
    assert not within_budget(0.90, 1000, 0.963, 0.5)
    assert within_budget(0.957, 1000, 0.963, 0.5) == within_budget(0.958, 1000, 0.963, 0.5)  # one image apart


def test_recommendation_is_the_fastest_within_budget_against_the_uncompressed_float_model():
    rec = recommend(_results()["results"], max_drop=0.5)
    assert rec.reference["artifact"] == "baseline"  # not the more accurate pruned Keras model
    assert rec.reference_accuracy == pytest.approx(0.963)
    assert rec.row["artifact"] == "pruned-tflite-int8"  # qat-onnx-int8 is faster but 6 points down
    assert rec.fastest["artifact"] == "qat-onnx-int8"
    assert rec.smallest["artifact"] == "qat-tflite-int8"
    assert rec.fp32["artifact"] == "baseline-tflite-fp32"
    assert rec.threads_to_use == 1  # 2 threads gain 2.4%: within 5%, so one core is enough
    assert "1 faster file(s) fall outside the budget" in rec.why
    assert recommend(_results()["results"], max_drop=0.5, objective="size").row["artifact"] == "qat-tflite-int8"


def test_busy_machine_and_unstable_floor_are_warned_about():
    assert measurement_warnings(_results()["machine"], {"spread": 0.01}) == []
    busy = _results(load=(1.6, 1.2, 0.9))["warnings"]
    assert len(busy) == 1
    assert busy[0].startswith("BUSY MACHINE: 1-minute load average 1.60 at the start")
    assert "UNSTABLE FLOOR" in " ".join(_results(spread=0.25)["warnings"])
    md = to_markdown(build_blocks([_results(load=(1.6, 1.2, 0.9))], 0.5, plots=False))
    assert md.index("**WARNING** — BUSY MACHINE") < md.index("Which file to ship")


def test_busy_is_decided_on_other_processes_cpu_when_sampled_not_on_the_load_average():
    machine = _results(load=(1.6, 1.2, 0.9))["machine"]  # a busy-looking load average ...
    quiet = {**machine, "state_start": {**machine["state_start"], "other_cpu": 0.05},
             "state_end": {**machine["state_end"], "other_cpu": 0.1}}  # fmt: skip
    assert measurement_warnings(quiet, {"spread": 0.01}) == []  # ... that was the bench's own stage before
    burner = {**quiet, "state_end": {**quiet["state_end"], "other_cpu": 0.98}}
    (warning,) = measurement_warnings(burner, {"spread": 0.01})
    assert warning.startswith("BUSY MACHINE: other processes kept 0.98 cores at the end of the bench busy")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_other_cpu_sees_a_cpu_burning_process_and_not_this_process_itself():
    import sys

    from edgepack.machine import other_cpu

    sum(i * i for i in range(2_000_000))  # this process's own work before the sample does not count
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = other_cpu(1.0)
    finally:
        burner.kill()
        burner.wait()
    assert busy is not None
    assert busy >= 0.7  # one core burning (a shared machine may add more)


def test_mixed_files_are_labelled_mixed_with_their_float_layers_in_the_report():
    md = to_markdown(build_blocks([_results()], 0.5, plots=False))
    assert "int8 mixed (1 float)" in md
    assert "mixed: 1 layer(s) left float by the latency plan (conv1)" in md


def test_plot_labels_never_overlap_even_for_coincident_points():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgepack.bench.report import place_labels

    fig, ax = plt.subplots(figsize=(8, 5))
    points = [(20.0, 96.3)] * 5 + [(21.0, 96.3), (60.0, 96.2), (40.0, 90.0)]
    ax.scatter(*zip(*points, strict=True))
    ax.set_xscale("log")
    ax.set_xlim(10, 100)
    ax.set_ylim(89, 98)
    texts = place_labels(ax, points, [f"file-number-{i}" for i in range(len(points))])
    fig.canvas.draw()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, fig.canvas.get_renderer()) for t in texts]  # the label, not its leader
    plt.close(fig)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1), (i, j)


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


CHROME = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
          "--window-size=1280,800"]  # fmt: skip
# after load: the text of everything whose top is within the first 800 px, and the card's and first plot's boxes
PROBE = """<script>window.addEventListener('load', () => {
  const card = document.getElementById('decision').getBoundingClientRect();
  const img = document.images[0].getBoundingClientRect();
  const seen = [...document.body.querySelectorAll('h1,h2,dt,dd,.warn,figcaption,summary')]
    .filter(e => e.getBoundingClientRect().top < 800 && e.getBoundingClientRect().height > 0)
    .map(e => e.textContent.trim()).join(' | ');
  const out = document.createElement('pre'); out.id = 'probe';
  out.textContent = JSON.stringify({card_bottom: card.bottom, img_top: img.top, seen: seen});
  document.body.appendChild(out);
});</script></body>"""


def report_first_screen(page: str, tmp: Path) -> tuple[dict, Path]:
    """Render ``page`` at 1280x800 in headless Chromium: (what the probe saw, the screenshot's path)."""
    (tmp / "report.html").write_text(page, encoding="utf-8")
    (tmp / "probe.html").write_text(page.replace("</body>", PROBE), encoding="utf-8")
    chrome = [_chromium(), *CHROME]
    dom = subprocess.run([*chrome, f"--user-data-dir={tmp / 'p1'}", "--virtual-time-budget=5000", "--dump-dom",
                          (tmp / "probe.html").as_uri()], capture_output=True, text=True, timeout=180).stdout  # fmt: skip
    shot = tmp / "first-screen.png"
    subprocess.run([*chrome, f"--user-data-dir={tmp / 'p2'}", f"--screenshot={shot}", (tmp / "report.html").as_uri()],
                   capture_output=True, timeout=180)  # fmt: skip
    import html as _html

    probe = dom.split('<pre id="probe">')[1].split("</pre>")[0]
    return json.loads(_html.unescape(probe)), shot


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_report_first_screen_answers_which_file_why_and_what_it_costs(tmp_path):
    from PIL import Image

    page = to_html(build_blocks([_results(load=(1.6, 1.2, 0.9))], 0.5))
    seen, shot = report_first_screen(page, tmp_path)

    assert seen["card_bottom"] <= 800  # the whole decision card is on the first screen
    assert seen["img_top"] < 800  # and the accuracy-vs-latency plot starts on it
    text = seen["seen"]
    for needed in ("WARNING — BUSY MACHINE", "Which file to ship", "recommended", "pruned-tflite-int8", "why",
                   "what it costs", "threads to use", "copy these files to the device",
                   "/runs/demo/export/pruned-tflite-int8.json", "smallest within budget", "qat-tflite-int8",
                   "fastest (any accuracy)", "qat-onnx-int8", "fp32 reference", "baseline-tflite-fp32"):  # fmt: skip
        assert needed in text, needed
    assert "Every row" not in text.split("Accuracy vs latency")[0]  # the full tables come after, collapsed
    assert "<details><summary>Every row" in page
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (800, 1280)
    green_card = (np.abs(pixels - [243, 251, 246]).sum(axis=2) < 6).sum()  # the card's background
    assert green_card > 50_000


def test_floor_window_spread_is_measured_over_the_best_windows():
    from edgepack.bench.floor import window_spread

    assert window_spread([10.0, 10.2, 30.0, 10.1], 3) == pytest.approx(0.02)  # the disturbed window is ignored
    assert window_spread([10.0, 20.0], 2) == pytest.approx(1.0)
