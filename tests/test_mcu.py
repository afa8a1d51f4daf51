"""Microcontrollers (issue 15): TFLM parity, the measured arena, the C bundle, LUT compression, boards, bad input.

Files are made once per module from the session's tiny baseline (all-int8, as the export stage's MCU file) and
from a 16-cluster copy of it; TFLM runs on the tiny eval set (200 digits).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.errors import ConfigError
from edgepack.mcu import tflm_available

pytestmark = pytest.mark.skipif(not tflm_available(), reason="tflite-micro (x86_64 wheels only) is not installed")


def _int8(model, data) -> bytes:
    from edgepack.export.tflite import convert_tflite

    calibration = data.x_train[:100].astype(np.float32) / np.float32(255.0)
    return convert_tflite(model, "int8", calibration)


@pytest.fixture(scope="module")
def baseline_model(tiny_run):
    from edgepack.compress import load_keras

    return load_keras(tiny_run.file(tiny_run.require("baseline", stage="train", format="keras")))


@pytest.fixture(scope="module")
def int8_file(baseline_model, tiny_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("mcu") / "baseline-tflite-int8.tflite"
    path.write_bytes(_int8(baseline_model, tiny_data))
    return path


@pytest.fixture(scope="module")
def clustered_file(baseline_model, tiny_data, tmp_path_factory):
    from edgepack.compress.clustering import cluster
    from edgepack.recipe import ClusterSettings

    model, _ = cluster(baseline_model, tiny_data, ClusterSettings(clusters=16, epochs=1), progress=False)
    path = tmp_path_factory.mktemp("mcu") / "clustered-tflite-int8.tflite"
    path.write_bytes(_int8(model, tiny_data))
    return path


def _litert(path, data):
    from edgepack.export.parity import run_file

    return run_file(path, data.x_test)[0]


def test_arena_is_the_smallest_size_that_runs_and_ten_percent_less_fails(int8_file):
    from edgepack.mcu.arena import measure, runs

    content = int8_file.read_bytes()
    arena = measure(content)

    assert runs(content, arena["arena_bytes"])
    assert not runs(content, int(arena["arena_bytes"] * 0.9))
    assert not runs(content, arena["arena_bytes"] - 16)
    assert arena["print_allocations_total_bytes"] == arena["arena_bytes"]
    assert arena["head_bytes"] + arena["tail_bytes"] == arena["arena_bytes"]
    assert arena["head_bytes"] >= 26 * 26 * 32  # conv1's int8 output (26x26x32) is planned in the head
    assert arena["recommended_bytes"] > arena["arena_bytes"]


def test_tflm_agrees_with_litert_on_the_eval_set_and_fits_the_boards(int8_file, tiny_data):
    from edgepack.mcu.stage import verify_content
    from edgepack.mcu.tflm import output_scale

    content = int8_file.read_bytes()
    block = verify_content(content, int8_file.name, tiny_data.x_test, tiny_data.y_test, _litert(int8_file, tiny_data),
                           output_scale(content), 2_630_000, ("nano33ble", "rp2040"))  # fmt: skip

    p = block["parity"]
    assert p["passed"], p["failures"]
    assert p["n_eval"] == 200
    assert p["top1_agreement"] >= 0.99
    assert abs(p["accuracy_change_points"]) <= 0.5
    assert block["flash_bytes"] == len(content)
    assert [f["board"] for f in block["boards"]] == ["nano33ble", "rp2040"]
    assert all(f["fits"] for f in block["boards"])  # ~230 KB model, ~30 KB arena
    est = {e["board"]: e for e in block["latency_estimates"]}
    assert est["nano33ble"]["kind"] == "estimate"
    assert "MLPerf Tiny" in est["nano33ble"]["source"]
    assert est["rp2040"]["latency_ms_estimate"] is None


def test_tflm_parity_fails_when_the_outputs_differ(tiny_data):
    from edgepack.mcu.tflm import parity

    rng = np.random.default_rng(0)
    a = rng.random((200, 10)).astype(np.float32)
    b = rng.random((200, 10)).astype(np.float32)

    assert parity(a, a, tiny_data.y_test)["passed"]
    verdict = parity(a, b, tiny_data.y_test)
    assert not verdict["passed"]
    assert "TFLM top-1 agreement with LiteRT" in verdict["failures"][0]


def _bundle(tmp_path, path):
    from edgepack.mcu import cbundle
    from edgepack.mcu.arena import measure
    from edgepack.mcu.ops import read

    content = path.read_bytes()
    ops = read(content).op_set
    cbundle.write(tmp_path / "b.tflm", content, path.name, ops, measure(content), [str(i) for i in range(10)], "x")
    return tmp_path / "b.tflm"


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs the host C++ compiler (g++, in .ci/run's apt list)")
def test_model_data_cc_compiles_and_writes_back_the_tflite_byte_for_byte(int8_file, tmp_path):
    bundle = _bundle(tmp_path, int8_file)
    (tmp_path / "dump.cc").write_text(
        '#include <cstdint>\n#include <cstdio>\n#include "model_data.h"\n'
        "int main() {\n"
        "  if (reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 3;\n"
        "  return std::fwrite(g_model_data, 1, g_model_data_len, stdout) == g_model_data_len ? 0 : 1;\n}\n"
    )
    exe = tmp_path / "dump"
    subprocess.run(["g++", "-std=c++17", "-O0", "-I", str(bundle), str(bundle / "model_data.cc"),
                    str(tmp_path / "dump.cc"), "-o", str(exe)], check=True, capture_output=True)  # fmt: skip

    out = subprocess.run([str(exe)], check=True, capture_output=True).stdout

    assert out == int8_file.read_bytes()
    text = (bundle / "model_data.cc").read_text()
    assert f"{len(out)} bytes" in text
    assert __import__("hashlib").sha256(out).hexdigest() in text


def test_op_resolver_lists_exactly_the_files_operator_codes(int8_file, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.mcu.ops import RESOLVER

    header = (_bundle(tmp_path, int8_file) / "op_resolver.h").read_text()
    methods = re.findall(r"resolver\.(Add\w+)\(\)", header)
    by_method = {m: op for op, m in RESOLVER.items()}
    file_ops = {o["op_name"] for o in Interpreter(model_path=str(int8_file))._get_ops_details()}

    assert sorted(by_method[m] for m in methods) == sorted(file_ops)
    assert len(methods) == len(set(methods))
    assert "MicroMutableOpResolver<kNumOps>" in header
    assert f"kNumOps = {len(file_ops)};" in header
    assert re.search(r"kTensorArenaSize = \d+;", (tmp_path / "b.tflm" / "arena.h").read_text())


def test_lut_compressed_clustered_file_is_smaller_and_passes_tflm_parity(clustered_file, tiny_data):
    from edgepack.mcu import lut
    from edgepack.mcu.ops import read
    from edgepack.mcu.stage import verify_content
    from edgepack.mcu.tflm import output_scale

    plain = clustered_file.read_bytes()
    small, chosen = lut.compress(plain)
    block = verify_content(small, "lut", tiny_data.x_test, tiny_data.y_test, _litert(clustered_file, tiny_data),
                           output_scale(plain), None, ("stm32l4r5zi",))  # fmt: skip

    assert len(small) < 0.7 * len(plain)  # the dense kernel (91% of the weights) at 4 bits instead of 8
    assert {c["op"] for c in chosen} >= {"FULLY_CONNECTED"}
    assert all(c["bits"] <= 4 and c["max_values"] <= 16 for c in chosen)
    assert "custom:TFLM_DECODE" in read(small).op_set
    assert block["parity"]["passed"], block["parity"]["failures"]
    assert block["parity"]["top1_agreement"] >= 0.99


def test_lut_skips_a_file_whose_weights_are_not_clustered(int8_file):
    from edgepack.mcu import lut

    assert lut.compress(int8_file.read_bytes()) is None


def _with_opcode(content: bytes, old: str, new: str) -> bytes:
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(content, 0))
    code = getattr(fb.BuiltinOperator, new)
    for oc in model.operatorCodes:
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == getattr(fb.BuiltinOperator, old):
            oc.builtinCode, oc.deprecatedBuiltinCode = code, min(code, 127)
    b = flatbuffers.Builder(len(content) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_an_op_tflm_lacks_is_refused_in_one_line_naming_it(int8_file):
    from edgepack.mcu.arena import runs
    from edgepack.mcu.tflm import check_file

    patched = _with_opcode(int8_file.read_bytes(), "SOFTMAX", "TOPK_V2")

    with pytest.raises(ConfigError, match="TFLM has no kernel for op TOPK_V2") as e:
        check_file(patched, "x.tflite")
    assert e.value.exit_code == 2
    assert "\n" not in str(e.value)
    assert not runs(patched, 1 << 20)  # the interpreter itself agrees: it has no such kernel


def test_a_float_file_is_refused_for_tflm(baseline_model):
    from edgepack.export.tflite import convert_tflite
    from edgepack.mcu.tflm import check_file

    with pytest.raises(ConfigError, match="not an all-int8 file.*FLOAT32") as e:
        check_file(convert_tflite(baseline_model, "fp32"), "baseline-tflite-fp32.tflite")
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--board", "nosuch"], "--board nosuch: unknown board; choose all or from nano33ble"),
        (["--tflm", "--precisions", "fp32"], "TFLM verifies int8 .tflite files only"),
        (["--tflm", "--formats", "onnx"], "TFLM verifies int8 .tflite files only"),
    ],
)
def test_bad_mcu_options_exit_2_with_one_line_and_write_nothing(run_copy, capsys, args, message):
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*"))

    code = main(["export", str(run_copy), *args])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert message in err[0]
    assert sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")) == before


def test_boards_fit_counts_runtime_overheads_and_refuses_unknown_names():
    from edgepack.mcu.boards import BOARDS, resolve

    nano = BOARDS["nano33ble"]
    fits = nano.fit(100_000, 200_000)
    too_big = nano.fit(nano.ram_bytes, 200_000)

    assert resolve("all") == tuple(BOARDS)
    assert resolve("rp2040,nano33ble") == ("rp2040", "nano33ble")
    assert fits["ram_bytes"] == 100_000 + nano.runtime_ram_bytes
    assert fits["fits"]
    assert not too_big["fits"]
    assert not too_big["ram_fits"]
    assert too_big["flash_fits"]
    with pytest.raises(ConfigError, match="unknown board"):
        resolve(["stm32l4r5zi", "esp8266"])


def test_export_stage_verifies_int8_tflite_in_tflm_and_writes_bundles_and_report(run_copy):
    from edgepack.mcu.report import mcu_blocks

    code = main(["export", str(run_copy), "--formats", "tflite", "--precisions", "fp32,int8", "--int8-layers", "all",
                 "--board", "nano33ble,stm32h7a3zi", "-q"])  # fmt: skip

    manifest = json.loads((run_copy / "manifest.json").read_text())
    arts = {a["name"]: a for a in manifest["artifacts"] if a["stage"] == "export"}
    t = arts["baseline-tflite-int8"]["metrics"]["tflm"]
    bundle = json.loads((run_copy / "export" / "baseline-tflite-int8.json").read_text())
    blocks = mcu_blocks(manifest)
    assert code == 0
    assert "tflm" not in arts["baseline-tflite-fp32"]["metrics"]
    assert t["parity"]["passed"]
    assert t["parity"]["top1_agreement"] >= 0.99
    assert t["arena"]["arena_bytes"] > 0
    assert t["flash_bytes"] == arts["baseline-tflite-int8"]["metrics"]["size_bytes"]
    assert [f["board"] for f in t["boards"]] == ["nano33ble", "stm32h7a3zi"]
    assert bundle["tflm"]["arena"]["arena_bytes"] == t["arena"]["arena_bytes"]
    assert sorted(p.name for p in (run_copy / "export" / "baseline-tflite-int8.tflm").iterdir()) == sorted(
        ["arena.h", "main.cc", "model_data.cc", "model_data.h", "op_resolver.h"])  # fmt: skip
    tables = [b for b in blocks if b[0] == "table"]
    assert tables[0][2][0][0] == "export/baseline-tflite-int8.tflite"
    assert tables[0][2][0][-1] == "PASS"
    assert any(b[0] == "h2" and "ESTIMATES" in b[1] for b in blocks)


def test_mcu_command_verifies_one_file_and_refuses_a_float_file_or_an_op_tflm_lacks(
    int8_file, baseline_model, tiny_data, tmp_path, capsys
):
    from edgepack.export.tflite import convert_tflite

    shutil.copyfile(int8_file, tmp_path / "m.tflite")
    np.savez(tmp_path / "eval.npz", x=tiny_data.x_test, y=tiny_data.y_test, class_names=np.array(tiny_data.class_names))
    (tmp_path / "f.tflite").write_bytes(convert_tflite(baseline_model, "fp32"))
    (tmp_path / "op.tflite").write_bytes(_with_opcode(int8_file.read_bytes(), "SOFTMAX", "TOPK_V2"))

    ok = main(["mcu", str(tmp_path / "m.tflite"), "--board", "rp2040", "--json"])
    block = json.loads(capsys.readouterr().out)
    codes = {}
    for name in ("f.tflite", "op.tflite"):
        codes[name] = main(["mcu", str(tmp_path / name)])
        codes[name + " err"] = capsys.readouterr().err.strip().splitlines()

    assert ok == 0
    assert block["parity"]["passed"]
    assert block["parity"]["n_eval"] == 200
    assert [f["board"] for f in block["boards"]] == ["rp2040"]
    assert (tmp_path / "m.tflm" / "op_resolver.h").is_file()
    assert codes["f.tflite"] == 2
    assert codes["op.tflite"] == 2
    assert len(codes["f.tflite err"]) == 1
    assert "not an all-int8 file" in codes["f.tflite err"][0]
    assert codes["op.tflite err"] == [f"edgepack: error: {tmp_path / 'op.tflite'}: TFLM has no kernel for op "
                                      "TOPK_V2; TFLM runs only the ops of its MicroMutableOpResolver"]  # fmt: skip
    assert not (tmp_path / "f.tflm").exists()
    assert not (tmp_path / "op.tflm").exists()
