"""The benchmark scripts: each one's ``--quick`` runs (so none of them rots), and the rules
that make their numbers say what they measure: load recorded and a loaded table refused,
wrong outputs flagged and not timed, the order of systems rotating, peers given accelir's
session options, build time against the fastest exporter, every peer's memory shown.

The ``--quick`` runs pass ``--allow-load``: test machines are busy, and a quick run is a
check that the script works, not a measurement.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from accelir.timing import time_interleaved

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repo, not of the installed package
    sys.path.insert(0, str(ROOT))
from benchmarks import conditions  # noqa: E402
from benchmarks.conditions import LoadGuard, check_outputs  # noqa: E402


def _run_script(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _assert_ran(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc.stdout


# ----- every script's --quick --------------------------------------------------------

@pytest.mark.parametrize("script", ["capture_torch.py", "capture_jax.py"])
def test_quick_capture_scripts_state_their_settings_and_load(script):
    out = _assert_ran(_run_script([f"benchmarks/{script}", "--quick", "--allow-load"]))
    assert f"{conditions.cpu_count()} CPUs" in out and "load " in out
    assert "thread" in out


def test_quick_flax_prefill_times_both_ways_on_both_backends():
    out = _assert_ran(_run_script(["benchmarks/flax_prefill.py", "--quick", "--allow-load"], timeout=600))
    assert f"{conditions.cpu_count()} CPUs" in out and "load " in out
    rows = [line.split() for line in out.splitlines() if line.startswith("small ")]
    assert [r[1] for r in rows] == ["onnxruntime", "xla"]
    assert all(float(r[3]) > 0 and float(r[4]) > 0 for r in rows)


@pytest.mark.parametrize("model", ["gpt2", "qwen2"])
def test_quick_xla_step_times_each_variant_and_the_floor(model):
    out = _assert_ran(_run_script(["benchmarks/xla_step.py", "--quick", "--model", model, "--precisions", "fp32,int8",
                                   "--capacities", "40,64", "--without", "rows_of_outputs", "--floor"], timeout=600))
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ")
            and not line.startswith("| step") and not line.startswith("|---")}
    assert set(rows) == {"fp32", "fp32, without rows_of_outputs", "floor: jitted sum over the weights",
                         "floor: numpy sum over the weights", "int8", "int8, without rows_of_outputs"}, out
    assert all(len(cells) == 2 and all(float(c) >= 0 for c in cells) for cells in rows.values()), out
    assert "load average" in out and "float32 weights" in out


def test_quick_passes_states_threads_machine_sizes():
    out = _assert_ran(_run_script(["benchmarks/passes.py", "--quick", "--allow-load", "--sizes", "300", "600"]))
    settings = next(line for line in out.splitlines() if line.startswith("settings:"))
    assert "one Python thread" in settings and "sizes 300, 600" in settings
    assert f"{conditions.cpu_count()} CPUs" in settings
    assert out.count("load ") >= 3  # the header and one per row


def test_quick_run_writes_every_column(tmp_path):
    out = _assert_ran(_run_script(["-m", "benchmarks.run", "--quick", "--allow-load", "--out", str(tmp_path)],
                                  timeout=900))
    table = (tmp_path / "results.md").read_text()
    assert table.splitlines()[0] in out.splitlines()
    for column in ("torch eager", "onnx (dynamo) + ort, accelir's session options",
                   "onnx (torchscript) + ort, accelir's session options", "jax.jit", "accelir -> ort",
                   "accelir -> xla", "| load |"):
        assert column in table
    assert "wrong output" not in table and "failed" not in table
    assert "fastest export + session build" in table and "peak memory added by each build" in table


def test_quick_precision_against_onnxruntimes_quantisers():
    out = _assert_ran(_run_script(["-m", "benchmarks.precision", "--quick", "--allow-load"], timeout=900))
    for row in ("| bert | accelir int8 |", "| bert | ort quantize_dynamic |", "| gpt2 | accelir int4 |",
                "| qwen2 | ort MatMulNBitsQuantizer (block 32, level 4) |", "| qwen2 | accelir fp32 |"):
        assert row in out
    assert "vs peer" in out and f"on {conditions.cpu_count()} CPUs" in out
    assert "int4 at MatMulNBits accuracy level 4, accelir and peer alike" in out


def test_quick_precision_runs_accelir_and_the_peer_at_the_accuracy_level_asked():
    out = _assert_ran(_run_script(["-m", "benchmarks.precision", "--quick", "--allow-load", "--models", "qwen2",
                                   "--accuracy-level", "0"], timeout=600))
    assert "| qwen2 | ort MatMulNBitsQuantizer (block 32, level 0) |" in out and "accuracy level 0" in out
    assert "| qwen2 | accelir int4 |" in out
    assert "| qwen2 | ort MatMulNBitsQuantizer (block 32, level 0), accelir's options |" in out


def test_precision_report_compares_with_the_faster_of_the_peers_sessions():
    """The peer's file runs on onnxruntime's default optimizers and on accelir's; "vs peer" is against
    the faster, so that a session option accelir's rows alone had cannot make the ratio."""
    from benchmarks.precision import PEER_ACCELIR_OPTIONS, report
    peer = "ort quantize_dynamic"

    def system(ms: float) -> dict:
        return {"median_ms": ms, "cosine": 1.0, "max_rel": 0.0, "build_s": 1.0, "layers": "1/1"}
    row = {"model": "bert", "peer": peer, "peers": [peer, peer + PEER_ACCELIR_OPTIONS], "load": "0.1",
           "systems": {"accelir fp32": system(200.0), "accelir int8": system(100.0), peer: system(125.0),
                       peer + PEER_ACCELIR_OPTIONS: system(100.0)}}
    line = next(x for x in report([row], 1, "").splitlines() if x.startswith("| bert | accelir int8 |"))
    assert line.split("|")[8].strip() == "1.00x"


def test_precision_report_gives_no_ratio_to_a_peer_that_quantised_nothing():
    """MatMulNBitsQuantizer leaves GPT-2's Gemm layers in float: accelir's int4 against that is not a
    comparison of quantisers, and the report says so instead of a ratio."""
    from benchmarks.precision import PEER_ACCELIR_OPTIONS, report
    peer = "ort MatMulNBitsQuantizer (block 32, level 4)"

    def system(ms: float, layers: str) -> dict:
        return {"median_ms": ms, "cosine": 1.0, "max_rel": 0.0, "build_s": 1.0, "layers": layers}
    row = {"model": "gpt2", "peer": peer, "peers": [peer, peer + PEER_ACCELIR_OPTIONS], "load": "0.1",
           "systems": {"accelir fp32": system(200.0, ""), "accelir int4": system(180.0, "48/48"),
                       peer: system(210.0, "0/48"), peer + PEER_ACCELIR_OPTIONS: system(205.0, "0/48")}}
    line = next(x for x in report([row], 1, "").splitlines() if x.startswith("| gpt2 | accelir int4 |"))
    assert line.split("|")[8].strip() == "peer float"


def test_quick_int4_kernels_times_each_accuracy_level():
    out = _assert_ran(_run_script(["-m", "benchmarks.int4_kernels", "--quick", "--allow-load", "--gpt2"], timeout=600))
    for row in ("| [4,128] x [128,64] | 32 | ", "| [1,128] x [128,64] | 128 | ", "| accelir fp32 | ",
                "| accelir int4, level 0 | ", "| accelir int4, level 4 | "):
        assert row in out
    assert "level 4 cpu ms" in out and "(1.00x" in out and "decode cpu ms / token" in out
    rows = [line for line in out.splitlines() if line.startswith("| [")]
    assert len(rows) == 4 and all("(= level 0)" not in row.split("|")[-2] for row in rows)  # level 4 rounds x


def test_int4_kernels_times_by_wall_clock_where_idle_threads_would_spin():
    """With one intra-op thread the kernel runs on the calling thread and CPU time is its work; with more,
    onnxruntime's idle threads spin, and CPU time would count their waiting."""
    out = _assert_ran(_run_script(["-m", "benchmarks.int4_kernels", "--quick", "--allow-load", "--threads", "2",
                                   "--levels", "0,4", "--blocks", "32"], timeout=600))
    assert "level 4 wall ms" in out and "wall-clock time per session.run" in out and "cpu ms" not in out


def test_quick_int8_kernels_compares_the_three_forms():
    out = _assert_ran(_run_script(["-m", "benchmarks.int8_kernels", "--quick", "--allow-load"], timeout=300))
    assert "| [4,64] x [64,64] | " in out and "(1.00x)" in out and "MatMulIntegerToFloat" in out


def test_quick_onnxruntime_models():
    out = _assert_ran(_run_script(["-m", "benchmarks.onnxruntime_models", "--quick", "--allow-load"], timeout=900))
    for system in ("| accelir |", "| torchscript |", "| torchscript + accelir's options |", "| dynamo |",
                   "| dynamo + accelir's options |"):
        assert system in out
    assert "wrong output" not in out and "fastest export" in out and f"on {conditions.cpu_count()} CPUs" in out


def test_quick_onnxruntime_models_profile_only(tmp_path):
    """--profile-only: each system's CPU time per run and kernel time by op type, and the profiles on disk."""
    out = _assert_ran(_run_script(["-m", "benchmarks.onnxruntime_models", "--quick", "--allow-load", "--profile-only",
                                   "--profile", str(tmp_path)], timeout=900))
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| gpt2 (load ")]
    assert [r[1] for r in rows] == ["accelir", "torchscript", "torchscript + accelir's options", "dynamo",
                                    "dynamo + accelir's options"]
    assert rows[0][4] == "1.000" and all(float(r[2]) > 0 for r in rows)
    assert "accelir / best export, either options, by CPU time: " in out and "fastest export" not in out
    # the kernel time by op type of each system (the order of the tiny model's kernels is a near tie)
    accelir_ops = [line for line in out.splitlines() if line.startswith("gpt2") and "/ accelir: " in line]
    assert len(accelir_ops) == 1 and " Gemm " in accelir_ops[0]
    assert len(list(tmp_path.glob("gpt2-*.json"))) == 5


def test_profile_only_needs_a_profile_directory():
    proc = _run_script(["-m", "benchmarks.onnxruntime_models", "--quick", "--allow-load", "--profile-only"])
    assert proc.returncode == 2 and "--profile-only needs --profile DIR" in proc.stderr


def test_quick_onnx_models():
    out = _assert_ran(_run_script(["benchmarks/onnx_models.py", "--quick", "--allow-load"], timeout=900))
    rows = [line for line in out.splitlines() if line.startswith("gpt2")]
    assert [r.split()[1] for r in rows] == ["raw", "onnxsim", "accelir"]
    assert all("wrong output" not in r and f"on {conditions.cpu_count()} CPUs" in r for r in rows)


def test_quick_caffe_states_conversion_time_and_latency_ratio():
    out = _assert_ran(_run_script(["benchmarks/caffe.py", "--quick", "--allow-load"], timeout=600))
    for net in ("resnet50-shaped", "mobilenet-ssd-shaped"):
        line = next(i for i, text in enumerate(out.splitlines()) if text.startswith(net))
        head, timing = out.splitlines()[line:line + 2]
        assert "accelir conversion" in head and "OpenCV load" in head
        assert "ratio accelir / opencv" in timing and "not timed" not in timing
    ssd = next(text for text in out.splitlines() if text.startswith("mobilenet-ssd-shaped"))
    assert "ends with DetectionOutput" in ssd and "(0 detections)" not in ssd
    assert f"{conditions.cpu_count()} CPUs" in out


def test_quick_generate_times_every_peer_or_says_why_not():
    out = _assert_ran(_run_script(["benchmarks/generate.py", "--quick", "--allow-load", "--models", "qwen2-0.5b"],
                                  timeout=900))
    rows: dict[str, str] = {}
    for line in out.splitlines():  # the timing table's rows (the flat-latency table below repeats some names)
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)
    for system in ("transformers eager", "transformers torch.compile static cache", "onnxruntime-genai builder fp32",
                   "accelir -> onnxruntime", "accelir -> xla"):
        assert rows[system].endswith("| yes |"), rows[system]  # timed, and greedy gives transformers' tokens
    assert "not installable here" in rows["optimum ORTModelForCausalLM"]
    # int4 / int8 weights: timed, with their logits' error where their tokens differ
    for system in ("accelir -> onnxruntime int4", "accelir -> onnxruntime int8"):
        assert rows[system].endswith("| yes |") or "logits cosine" in rows[system], rows[system]
    assert "not run with --quick" in rows["accelir -> xla int4"] and "not run with --quick" in rows["accelir -> xla int8"]
    # flat latency: each float system at each past length, with attention's own growth taken out
    flat = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.endswith("flat) |")}
    assert {"transformers eager", "accelir -> onnxruntime", "accelir -> xla"} <= set(flat), out
    assert "| attention alone (eager sdpa, every layer) |" in out and "past 8 | past 32" in out
    # peak memory in a fresh process, beside the weights and cache it is held to
    memory = [line for line in out.splitlines() if line.startswith("| accelir -> onnxruntime int4 |")][-1]
    cells = [float(c) for c in memory.split("|")[2:-1]]
    # added peak, its ratio, whole-process peak, peak over the imports, the model alone, resident after
    assert len(cells) == 6 and cells[0] > 0
    assert cells[2] >= max(cells[0], cells[3], cells[5])  # the whole process's peak is the most it held
    assert "weights 0.8 MiB" in out and "x 1.25" in out
    assert "accelir -> onnxruntime int4: " in next(line for line in out.splitlines() if line.startswith("exported pair"))
    assert "memory-bandwidth probe (a 64 MiB sum, one thread): best " in out


def test_bandwidth_probe_retakes_a_measurement_taken_while_bandwidth_was_down(monkeypatch):
    probe = conditions.BandwidthProbe(mib=1, tolerance=0.8, retakes=2)
    readings = iter([10.0, 10.0, 5.0, 10.0, 10.0, 10.0])  # the second try's first reading is low
    monkeypatch.setattr(probe, "read", lambda: setattr(probe, "best", max(probe.best, r := next(readings))) or r)
    runs = []
    assert probe.measure(lambda: runs.append(1) or len(runs)) == (1, True)  # fair at once
    assert probe.measure(lambda: runs.append(1) or len(runs)) == (3, True)  # low, then retaken
    assert probe.retaken == 1 and probe.unfair == 0
    readings = iter([4.0] * 6)
    assert probe.measure(lambda: "kept") == ("kept", False)  # low every try: kept and counted
    assert probe.retaken == 3 and probe.unfair == 1
    assert "3 measurement(s) retaken" in probe.summary() and "1 kept below it" in probe.summary()
    real = conditions.BandwidthProbe(mib=1)
    assert real.read() > 0 and real.best > 0


def test_generate_times_only_the_systems_asked_for(monkeypatch, capsys):
    from benchmarks import generate
    with pytest.raises(SystemExit):
        generate.main(["--quick", "--allow-load", "--systems", "accelir -> onnxruntime,nope"])
    assert "unknown system(s) 'nope'" in capsys.readouterr().err
    built = []
    monkeypatch.setitem(generate.SYSTEMS, "accelir -> xla", lambda *a: built.append("xla") or (lambda *b: None))
    rows, gens, _ = generate.run_model("gpt2", quick=True, prompt=4, new=2, threads=1, rounds=1, tmp="",
                                       systems=["transformers eager"])
    by_name = {r["system"]: r for r in rows}
    assert not built and set(gens) == {"transformers eager"}
    assert by_name["accelir -> xla"]["note"] == "not asked for (--systems)"


def _fake_generation(name: str, tokens: int, seconds: float, events: list):
    def run(streamer):
        streamer.put("prompt")
        for k in range(tokens):
            events.append((name, k))
            time.sleep(seconds)
            streamer.put(k)
        streamer.end()
        return name
    return run


def test_lockstep_generations_take_turns_token_by_token_and_time_only_their_own_turns():
    from benchmarks import generate
    events: list = []
    fast, slow = _fake_generation("a", 5, 0.002, events), _fake_generation("b", 3, 0.05, events)
    (a_first, a_steps, a_out), (b_first, b_steps, b_out) = generate.lockstep([fast, slow])
    # token k of each runs next to the other's; "a" goes on alone once "b" has made its three
    assert events == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("a", 4)]
    assert (a_out, b_out) == ("a", "b") and (len(a_steps), len(b_steps)) == (4, 2)
    # each span is the system's own turn, not the other's too: "a" never sees "b"'s 50 ms
    assert 0.002 <= a_first < 0.05 and all(0.002 <= t < 0.05 for t in a_steps)
    assert 0.05 <= b_first and all(0.05 <= t for t in b_steps)
    rows = {x: {"timings": [], "unfair": 0} for x in "ab"}
    probe = type("Probe", (), {"measure": staticmethod(lambda run: (run(), True))})()
    paired = generate.paired_rows(["a", "b"], {"a": fast, "b": slow}, 2, probe, rows)
    assert paired["pairs"] == 4 and paired["median"] < 0.5 and len(rows["a"]["timings"]) == 2
    assert "median" in generate.paired_line(paired)

    def broken(streamer):
        streamer.put("prompt")
        raise ValueError("the peer failed")
    with pytest.raises(ValueError, match="the peer failed"):  # the other generation is not left waiting
        generate.lockstep([broken, _fake_generation("c", 3, 0.0, [])])


def test_generate_paired_needs_two_onnxruntime_systems_and_stops_their_spinning(monkeypatch, tmp_path, capsys):
    from benchmarks import generate
    with pytest.raises(SystemExit):
        generate.main(["--quick", "--allow-load", "--paired", "--systems", "accelir -> onnxruntime"])
    assert "--paired needs --systems naming two different systems" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate.main(["--quick", "--allow-load", "--paired", "--systems", "accelir -> onnxruntime,accelir -> onnxruntime"])
    assert "would wait on its own generation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        generate.main(["--quick", "--allow-load", "--paired", "--systems", "accelir -> onnxruntime,accelir -> xla"])
    assert "would spin into the other's turn" in capsys.readouterr().err
    # the setting reaches both kinds of session: onnxruntime-genai's config and accelir's steps
    monkeypatch.setattr(generate, "SESSION_CONFIG", dict(generate.SPINNING_STOP))
    path = tmp_path / "genai_config.json"
    path.write_text('{"model": {"decoder": {"session_options": {"log_id": "x"}}}}')
    generate._set_genai_threads(str(path), 2)
    import json
    assert json.loads(path.read_text())["model"]["decoder"]["session_options"] == {
        "log_id": "x", "intra_op_num_threads": 2, "session.force_spinning_stop": "1"}
    model = generate._build_model("qwen2-0.5b", True)
    run = generate.SYSTEMS["accelir -> onnxruntime"](model, str(tmp_path), 1)
    options = run.compiled._stepper.decode_session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"


def test_generate_runs_each_thread_count_in_a_fresh_process(monkeypatch, capsys):
    from benchmarks import generate
    calls = []

    class Done:
        returncode = 0
    monkeypatch.setattr(generate.subprocess, "run", lambda args, **kw: calls.append(args) or Done())
    assert generate.main(["--quick", "--threads", "1,2", "--allow-load", "--models", "gpt2"]) == 0
    assert [c[c.index("--threads") + 1] for c in calls] == ["1", "2"]
    assert all(c[-2:] != ["--threads", "1,2"] and "1,2" not in c and c[2:6] == ["--quick", "--allow-load", "--models",
                                                                              "gpt2"] for c in calls), calls
    assert capsys.readouterr().out.count("thread(s) per runtime =====") == 2
    with pytest.raises(SystemExit, match="positive thread counts"):
        generate.main(["--threads", "1,0"])


def test_quick_torch_compile_compares_accelir_with_inductor_and_eager():
    out = _assert_ran(_run_script(["-m", "benchmarks.torch_compile", "--quick", "--allow-load", "--models", "bert"],
                                  timeout=900))
    rows = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| bert |")]
    assert rows == ["eager", "inductor", "accelir -> onnxruntime", "accelir -> xla"]
    assert "wrong output" not in out and "failed" not in out and "eager:" not in out
    assert f"on {conditions.cpu_count()} CPUs" in out and "first call <= 0.5x inductor's" in out


def test_quick_sharding_reports_memory_latency_and_collectives():
    out = _assert_ran(_run_script(["-m", "benchmarks.sharding", "--quick", "--allow-load"], timeout=600))
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    assert list(rows)[1:] == ["one device", "data-parallel", "fsdp", "tensor-parallel"]
    assert "wrong output" not in out and f"on {conditions.cpu_count()} CPUs" in out
    assert "all-gather" in rows["fsdp"] and "all-reduce 4 " in rows["tensor-parallel"]  # two a layer, as Megatron's
    mib = {k: float(v.split("|")[2]) for k, v in rows.items() if k != "mode"}
    assert mib["fsdp"] < mib["one device"] / 4 and mib["tensor-parallel"] < mib["one device"]


def test_quick_gpu_check_says_what_is_missing():
    import torch
    proc = _run_script(["benchmarks/gpu_check.py", "--quick", "--allow-load"])
    if torch.cuda.is_available():
        _assert_ran(proc)
        return
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "gpu_check needs a GPU: torch sees no CUDA device" in proc.stderr
    assert "--device cpu" in proc.stderr


def test_quick_transformers_sweep_writes_counts_per_family_and_json(tmp_path):
    import json
    out = _assert_ran(_run_script(["benchmarks/transformers_sweep.py", "--quick", "--out", str(tmp_path)], timeout=900))
    data = json.loads((tmp_path / "transformers_sweep.json").read_text())
    records = {r["name"]: r for r in data["models"]}
    assert set(records) == {"bert:BertModel", "vit:ViTModel", "wav2vec2:Wav2Vec2Model"}
    for r in records.values():  # one model of each family, all captured and matching eager on both backends
        assert r["status"] == "captured" and r["export_mode"] == "non-strict", r
        assert {b: o["result"] for b, o in r["backends"].items()} == {"onnxruntime": "match", "xla": "match"}, r
    assert data["summary"]["all"]["match xla"] == 3 and set(data["summary"]) == {"text", "vision", "audio", "all"}
    assert "| text | 1 | 0 | 0 | 0 | 1 | 1 | 1 | 0 | 0 | 0 |" in out
    assert (tmp_path / "transformers_sweep.md").read_text().startswith("| family | models |")


def test_transformers_sweep_records_a_model_past_its_timeout_and_goes_on(tmp_path):
    from benchmarks import transformers_sweep as sweep
    cases = [sweep.Case("text", "bert", "BertModel"), sweep.Case("text", "no-such-type", "NoSuchModel")]
    records = sweep.sweep(cases, str(tmp_path), timeout=0.5, verbose=False)
    bert = records["bert:BertModel"]
    assert bert.status == "timeout" and "no result in 0.5 s (in " in bert.reason
    assert records["no-such-type:NoSuchModel"].status == "build"  # the next model ran on a fresh worker


def test_transformers_sweep_shrinks_keeping_one_layer_of_each_kind():
    from transformers import Gemma3TextConfig, Mamba2Config, Wav2Vec2Config

    from benchmarks.transformers_sweep import shrink_config
    gemma = shrink_config(Gemma3TextConfig)
    assert gemma.num_hidden_layers == 2 and gemma.hidden_size == 32 and gemma.vocab_size == 256
    assert gemma.layer_types == ["sliding_attention", "full_attention"]
    mamba = shrink_config(Mamba2Config)  # state-space heads x head width = expansion x hidden size
    assert mamba.num_heads * mamba.head_dim == mamba.expand * mamba.hidden_size
    wav = shrink_config(Wav2Vec2Config)  # the conv feature extractor keeps its length, derived counts follow
    assert len(wav.conv_dim) == len(wav.conv_kernel) == wav.num_feat_extract_layers == 7


# ----- the load --------------------------------------------------------------------------

def _loads(monkeypatch, *readings: float) -> None:
    values = iter(readings)
    last = [readings[-1]]

    def loadavg() -> tuple[float, float, float]:
        last[0] = next(values, last[0])
        return (last[0], last[0], last[0])
    monkeypatch.setattr(conditions.os, "getloadavg", loadavg)


def test_a_busy_machine_is_refused_at_the_start(monkeypatch):
    _loads(monkeypatch, 3.0)
    guard = LoadGuard(threads=1, cpus=4)
    with pytest.raises(SystemExit, match=r"load average at the start was 3\.00.*--allow-load"):
        guard.start()


def test_load_during_the_run_refuses_the_table_or_marks_it(monkeypatch):
    _loads(monkeypatch, 0.1, 0.2, 4.0)  # start, before the measurement, after it
    guard = LoadGuard(threads=1, cpus=4)
    guard.start()
    with guard.watch() as load:
        pass
    assert str(load[0]) == "load 0.20 -> 4.00 on 4 CPUs"
    with pytest.raises(SystemExit, match="table not written"):
        guard.finish()
    guard.allow_load = True
    assert guard.finish().startswith("TAKEN UNDER LOAD")


def test_the_benchmark_own_threads_are_counted_out(monkeypatch):
    _loads(monkeypatch, 0.1, 0.1, 2.2)  # after: 2 of our threads + 0.2 of others, 2 free cores allow 1.0
    guard = LoadGuard(threads=2, cpus=4)
    guard.start()
    with guard.watch():
        pass
    assert not guard.finish().startswith("TAKEN UNDER LOAD")


def test_a_script_writes_no_figures_under_load(monkeypatch, capsys):
    from benchmarks import passes
    _loads(monkeypatch, 0.0, 0.0, 9.0)
    with pytest.raises(SystemExit, match="table not written"):
        passes.main(["--sizes", "200", "--repeat", "1", "--max-load", "0"])
    assert "synthetic" not in capsys.readouterr().out


# ----- outputs checked, order rotated -----------------------------------------------

def test_check_outputs_by_dtype():
    want = [np.linspace(-2, 2, 50, dtype=np.float32), np.arange(4, dtype=np.int64)]
    assert check_outputs(want, [want[0] + 1e-4, want[1]]) == ""
    assert "max abs error" in check_outputs(want, [want[0] + 1e-2, want[1]])
    assert "elements differ" in check_outputs(want, [want[0], want[1] + 1])
    assert "shape" in check_outputs(want, [want[0][:3], want[1]])
    assert "outputs instead of" in check_outputs(want, want[:1])
    assert "NaN" in check_outputs(want, [np.where(want[0] > 1, np.nan, want[0]), want[1]])


def test_a_wrong_output_is_flagged_and_not_timed(monkeypatch):
    from benchmarks import run
    from benchmarks.run import Built

    def off_by_one(model, inputs, ctx):
        import torch
        return Built(lambda: model(*inputs).last_hidden_state + torch.tensor(1.0))
    monkeypatch.setitem(run.SYSTEMS, "off by one", (("torch",), off_by_one))
    cells, info = run.run_model("gpt2", ["torch eager", "off by one"], quick=True, threads=1, warmup=0, repeats=2,
                                budget_s=5.0, log=lambda _: None)
    by = {c.system: c for c in cells}
    assert by["off by one"].wrong.startswith("output 0: max abs error")
    assert by["off by one"].runs == 0 and by["off by one"].median_s is None
    assert by["torch eager"].runs == 2 and not by["torch eager"].wrong
    assert "wrong output" in run.markdown(cells, {"gpt2": info}, {"conditions": "", "repeats": 2, "warmup": 0,
                                                                   "threads": 1, "quick": True})


def test_the_order_of_systems_rotates_each_round():
    calls: list[str] = []
    time_interleaved({k: (lambda k=k: calls.append(k)) for k in "abc"}, warmup=0, repeats=3)
    assert calls == list("abcbcacab")


# ----- accelir's session options for the peers ---------------------------------------

def _add_layer_norm_model() -> bytes:
    """x + y followed by LayerNormalization: what ORT's SkipLayerNormFusion fuses."""
    rng = np.random.default_rng(0)
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [16], rng.standard_normal(16).astype(np.float32))
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [16], rng.standard_normal(16).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]),
         helper.make_node("LayerNormalization", ["s", "scale", "bias"], ["out"], axis=-1, epsilon=1e-5)],
        "add_ln", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8, 16]) for n in ("x", "y")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16])], [scale, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_peers_can_get_accelir_session_options(tmp_path):
    from benchmarks.onnxruntime_models import profile_by_op
    from benchmarks.run import ort_session
    model = _add_layer_norm_model()
    rng = np.random.default_rng(1)
    feeds = {n: rng.standard_normal((1, 8, 16)).astype(np.float32) for n in ("x", "y")}
    ops = {}
    for accelir_options in (False, True):
        session = ort_session(model, 1, str(tmp_path / f"p{accelir_options}"), accelir_options=accelir_options)
        ops[accelir_options] = {op for op, _, _ in profile_by_op(session, feeds, 1)[1]}
    assert "SkipLayerNormalization" in ops[False]
    assert "SkipLayerNormalization" not in ops[True] and "LayerNormalization" in ops[True]


# ----- build time against the fastest exporter, memory of every peer ---------------------

def test_build_time_is_against_the_fastest_export_and_memory_shows_every_peer():
    from benchmarks import onnxruntime_models
    from benchmarks.run import Cell, target_rows
    mib = 2 ** 20
    cells = [Cell("m", "onnx (torchscript) + ort", median_s=1.0, min_s=1.0, build_s=1.0, peak_added_bytes=30 * mib),
             Cell("m", "onnx (dynamo) + ort", median_s=1.0, min_s=1.0, build_s=10.0, peak_added_bytes=10 * mib),
             Cell("m", "accelir -> ort", median_s=1.0, min_s=1.0, build_s=2.0, peak_added_bytes=20 * mib)]
    rows = {t: v for t, _, v in target_rows(cells, {"m": {"framework": "torch", "weight_bytes": 10 * mib}})}
    assert rows["optimize() time / fastest export + session build (<= 0.3)"].startswith("2.00")
    assert rows["peak memory added by each build / weight bytes (reported)"] == \
        "onnx (torchscript) + ort 3.00, onnx (dynamo) + ort 1.00, accelir -> ort 2.00"
    fresh = {"accelir": {"cold_s": 2.0}, "torchscript": {"cold_s": 1.0}, "dynamo": {"cold_s": 10.0}}
    assert onnxruntime_models.build_ratio_text(fresh, "cold_s") == "2.00 (torchscript)"



def test_rounds_that_take_turns_rotate():
    from benchmarks.conditions import rotated
    assert [rotated("abc", k) for k in range(4)] == [list("abc"), list("bca"), list("cab"), list("abc")]


def test_a_busy_start_marks_the_table_even_when_the_run_was_quiet(monkeypatch):
    _loads(monkeypatch, 3.0, 0.0, 0.0)
    guard = LoadGuard(threads=1, cpus=4, allow_load=True)
    guard.start()
    with guard.watch():
        pass
    assert guard.finish().startswith("TAKEN UNDER LOAD")
