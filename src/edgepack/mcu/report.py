"""The report's microcontroller section, from the run's manifest (standard library only).

Measured rows (TFLM parity, arena, flash, fit) and estimated latencies are separate tables: an estimate is never
shown as a measurement.
"""

from __future__ import annotations

from typing import Any


def _kb(n: int | None) -> str:
    return "" if n is None else f"{n / 1024:.1f} KiB"


def _files(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(file label, its tflm block, the artifact) for every TFLM-verified file, LUT files after their source."""
    out = []
    for a in manifest.get("artifacts", []):
        block = (a.get("metrics") or {}).get("tflm")
        if not block or "mcu_file" in block:
            continue
        out.append((a["path"], block, a))
        if "lut" in block:
            out.append((block["lut"]["file"], block["lut"], a))
    return out


def mcu_blocks(manifest: dict[str, Any]) -> list[tuple]:
    """Report blocks (h2/p/table) for the MCU section; empty when the run has no TFLM results."""
    mcu = manifest.get("mcu")
    if not mcu:
        return []
    blocks: list[tuple] = [("h2", "Microcontrollers (TensorFlow Lite for Microcontrollers)")]
    redirects = [(a["name"], a["metrics"]["tflm"]) for a in manifest.get("artifacts", [])
                 if "mcu_file" in ((a.get("metrics") or {}).get("tflm") or {})]  # fmt: skip
    for name, block in redirects:
        blocks.append(("p", f"{name}: {block['reason']}."))
    files = _files(manifest)
    rows, refused = [], []
    for label, block, _ in files:
        if not block.get("supported", True):
            refused.append(f"{label}: {block['refusal']}")
            continue
        p, ar = block["parity"], block["arena"]
        verdict = "PASS" if p["passed"] else "FAIL: " + "; ".join(p["failures"])
        rows.append([label, f"{p['top1_agreement']:.4f}", f"{p['accuracy']:.4f}", f"{p['litert_accuracy']:.4f}",
                     f"{p['accuracy_change_points']:+.2f}", str(p["n_eval"]), f"{ar['arena_bytes']:,}",
                     f"{ar['head_bytes']:,} / {ar['tail_bytes']:,}", f"{ar['recommended_bytes']:,}",
                     f"{block['flash_bytes']:,}", verdict])  # fmt: skip
    if refused:
        blocks.append(("p", "Not verified in TFLM: " + " · ".join(refused)))
    if rows:
        blocks.append(("p", f"Measured in TFLM {mcu['tflm_version']} on this host (reference kernels), each file on "
                            "the whole eval set against the LiteRT run of the same file (LUT files: of the file they "
                            "were compressed from). Arena: the smallest size that allocates and runs (binary "
                            f"search); arena.h adds {mcu['arena_margin']}."))  # fmt: skip
        blocks.append(("table", ["file", "TFLM/LiteRT top-1 agree", "TFLM acc", "LiteRT acc", "Δacc pts", "n",
                                 "arena bytes", "head / tail", "arena.h", "flash bytes", "TFLM parity"], rows))  # fmt: skip
    names = [b["name"] for b in mcu["boards"]]
    fit_rows = []
    for label, block, _ in files:
        if not block.get("supported", True):
            continue
        cells = []
        for f in block["boards"]:
            mark = "fits" if f["fits"] else "does not fit" + (" (RAM)" if not f["ram_fits"] else "") + (
                " (flash)" if not f["flash_fits"] else "")  # fmt: skip
            cells.append(f"{mark}: RAM {f['ram_pct']:.0f}%, flash {f['flash_pct']:.0f}%")
        fit_rows.append([label, *cells])
    if fit_rows:
        blocks.append(("p", f"Board fit: RAM = {mcu['ram_counts']}; flash = {mcu['flash_counts']}."))
        blocks.append(("table", ["file", *names], fit_rows))
    choice = board_files(manifest)
    if any(c["file"] for c in choice):
        blocks.append(("p", "Which file each board gets, and why:"))
        blocks.append(("table", ["board", "file", "why"], [[c["board"], c["file"] or "—", c["why"]] for c in choice]))
    board_rows = [[b["name"], b["title"], f"{b['core']} {b['mhz']} MHz", _kb(b["ram_bytes"]), _kb(b["flash_bytes"]),
                   _kb(b["runtime_ram_bytes"]), _kb(b["runtime_flash_bytes"]), b["overhead_basis"]]
                  for b in mcu["boards"]]  # fmt: skip
    blocks.append(("table", ["board", "", "core", "RAM", "flash", "runtime RAM", "runtime flash",
                             "runtime overhead (stated assumption)"], board_rows))  # fmt: skip
    est_rows, sources = [], {}
    for label, block, _ in files:
        for e in block.get("latency_estimates", []):
            if e["latency_ms_estimate"] is not None:
                sources[e["board"]] = e["source"]
        if block.get("latency_estimates"):
            est_rows.append([label, *[f"~{e['latency_ms_estimate']:.0f} ms" if e["latency_ms_estimate"] is not None
                                      else "no estimate" for e in block["latency_estimates"]]])  # fmt: skip
    if est_rows:
        blocks.append(("h2", "Microcontroller latency — ESTIMATES, not measured"))
        blocks.append(("p", "MACs of the file ÷ the multiply-add rate a published MLPerf Tiny result implies for the "
                            "board (model MACs ÷ median latency). Sources: " + " · ".join(
                                f"{k}: {v}" for k, v in sources.items()) + ". Boards without a result: no estimate."))  # fmt: skip
        blocks.append(("table", ["file", *names], est_rows))
    return blocks


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """One line per TFLM-verified file for the command-line summary: verdict, arena, flash, board fit."""
    lines = []
    for a in manifest.get("artifacts", []):
        block = (a.get("metrics") or {}).get("tflm")
        if block and "mcu_file" in block:
            lines.append(f"  {a['name']}: mixed float/int8 for this host; microcontrollers get {block['mcu_file']}")
    for label, block, _ in _files(manifest):
        if not block.get("supported", True):
            lines.append(f"  {label}: not verified in TFLM: {block['refusal']}")
            continue
        p = block["parity"]
        fits = ", ".join(f"{f['board']} {'fits' if f['fits'] else 'NO'}" for f in block["boards"])
        lines.append(f"  {label}: TFLM {'PASS' if p['passed'] else 'FAIL'} (agreement with LiteRT "
                     f"{p['top1_agreement']:.4f}), arena {block['arena']['arena_bytes']:,} B, flash "
                     f"{block['flash_bytes']:,} B; {fits}")  # fmt: skip
    return ["microcontrollers (TFLM):", *lines] if lines else []


def board_files(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per board, the file it gets: among the TFLM-verified all-int8 files that pass and fit, the most accurate in
    TFLM, then the least RAM (what the application is usually short of), then the least flash; with why (and why
    not the host's mixed file)."""
    mixed = [
        a["name"] for a in manifest.get("artifacts", []) if "mcu_file" in ((a.get("metrics") or {}).get("tflm") or {})
    ]
    files = [(label, b) for label, b, _ in _files(manifest) if b.get("supported", True)]
    out = []
    for board in (manifest.get("mcu") or {}).get("boards", []):
        fits = []
        for label, b in files:
            f = next((f for f in b["boards"] if f["board"] == board["name"]), None)
            if f is not None and f["fits"] and b["parity"]["passed"]:
                fits.append((label, b, f))
        if not fits:
            out.append({"board": board["name"], "file": None, "why": "no verified file fits its RAM and flash"})
            continue
        label, b, f = max(fits, key=lambda t: (t[1]["parity"]["accuracy"], -t[2]["ram_bytes"], -t[2]["flash_bytes"]))
        why = (f"all-int8, TFLM accuracy {b['parity']['accuracy']:.4f}, RAM {f['ram_pct']:.0f}%, flash "
               f"{f['flash_pct']:.0f}%")  # fmt: skip
        left_out = [lb for lb, bb in files if lb != label and not any(
            x["board"] == board["name"] and x["fits"] for x in bb["boards"])]  # fmt: skip
        if left_out:
            why += "; does not fit: " + ", ".join(left_out)
        if mixed:
            why += f"; not {', '.join(mixed)} (float ops kept for this host's latency; an MCU runs the int8 kernels)"
        out.append({"board": board["name"], "file": label, "why": why})
    return out
