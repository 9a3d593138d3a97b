"""Benchmark: text generation with a key/value cache, accelir against the generation peers.

Full-size GPT-2 small and a Qwen2-0.5B-size config (random weights), a 32-token prompt,
128 new tokens greedy (``min_new_tokens`` too, so every system makes all of them), batch 1,
``--threads`` intra-op threads per runtime (run it once with 1 and once with 2: XLA's
thread count is fixed when jax starts).  For each system: the time to the first token
(prefill), the median per-token decode latency, the build time, and whether its tokens
are transformers' eager tokens.  Systems, timed in interleaved rounds whose order rotates:

- transformers eager ``generate`` (DynamicCache);
- transformers ``generate`` with a static cache and the forward under ``torch.compile``;
- onnxruntime-genai's model builder output (fp32, CPU; the builder reads the
  ``save_pretrained`` directory), where the builder supports the architecture;
- optimum's ``ORTModelForCausalLM``: listed, not run (it needs transformers<4.58);
- accelir -> onnxruntime and accelir -> XLA (``accelir.optimize`` + ``cm.generate``).

The machine's load is recorded; a run under load prints no table unless ``--allow-load``.

    python benchmarks/generate.py --threads 1          # full-size models
    python benchmarks/generate.py --quick --allow-load # tiny configs, 8 tokens, one round (a check)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import add_load_arguments, guard_from, rotated  # noqa: E402

__all__ = ["MODELS", "main"]

OPTIMUM = "optimum ORTModelForCausalLM"
OPTIMUM_NOTE = "not installable here: needs transformers<4.58"


def _gpt2(quick: bool) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel
    small = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=256) if quick else {}
    return GPT2LMHeadModel(GPT2Config(**small)).eval()


def _qwen2(quick: bool) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    size = (dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1000, max_position_embeddings=256) if quick else
            dict(num_hidden_layers=24, hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True))
    return Qwen2ForCausalLM(Qwen2Config(**size)).eval()


MODELS: dict[str, Callable[[bool], Any]] = {"gpt2": _gpt2, "qwen2-0.5b": _qwen2}


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}"[:160]


def _transformers_eager(model: Any, ids: Any, n: int, tmp: str, threads: int) -> Callable[[Any], Any]:
    return lambda streamer: model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer)


def _transformers_compiled(model: Any, ids: Any, n: int, tmp: str, threads: int) -> Callable[[Any], Any]:
    import torch
    compiled = copy.deepcopy(model)  # the eager peer keeps its own forward
    compiled.forward = torch.compile(compiled.forward)
    return lambda streamer: compiled.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                              cache_implementation="static", streamer=streamer)


def _ort_genai(model: Any, ids: Any, n: int, tmp: str, threads: int) -> Callable[[Any], Any]:
    import numpy as np
    import onnxruntime_genai as og
    import torch
    hf, out = os.path.join(tmp, "hf"), os.path.join(tmp, "genai")
    model.save_pretrained(hf)
    proc = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", hf, "-o", out, "-p", "fp32",
                           "-e", "cpu", "-c", os.path.join(tmp, "cache")], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        raise RuntimeError(f"the model builder failed: {lines[-1] if lines else proc.returncode}")
    _set_genai_threads(os.path.join(out, "genai_config.json"), threads)
    config = og.Config(out)
    og_model = og.Model(config)
    prompt = ids.numpy().astype(np.int32)

    def generate(streamer: Any) -> Any:
        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=prompt.shape[1] + n, min_length=prompt.shape[1] + n, do_sample=False)
        generator = og.Generator(og_model, params)
        streamer.put(ids)
        generator.append_tokens(prompt)
        tokens = []
        while not generator.is_done():
            generator.generate_next_token()
            token = generator.get_next_tokens()
            tokens.append(int(token[0]))
            streamer.put(torch.tensor(token))
        streamer.end()
        return torch.cat([ids, torch.tensor([tokens])], dim=1)
    return generate


def _set_genai_threads(path: str, threads: int) -> None:
    """The builder's session options with ``threads`` intra-op threads, as accelir's sessions get them:
    left alone, onnxruntime-genai's session takes every core."""
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=4)


def _accelir(backend: str) -> Callable[..., Callable[[Any], Any]]:
    def build(model: Any, ids: Any, n: int, tmp: str, threads: int) -> Callable[[Any], Any]:
        import accelir
        cm = accelir.optimize(model, (ids,), backend=backend)
        if backend == "onnxruntime":  # the benchmark's thread count, as benchmarks.run gives accelir's sessions
            from accelir.generation import OrtSteps
            from accelir.lowering.onnxruntime import OnnxRuntimeModule
            cm._stepper = OrtSteps(OnnxRuntimeModule(cm.graph, threads=threads),
                                   OnnxRuntimeModule(cm.decode_graph, threads=threads))
        return lambda streamer: cm.generate(ids, max_new_tokens=n, min_new_tokens=n, streamer=streamer)
    return build


SYSTEMS: dict[str, Callable[..., Callable[[Any], Any]]] = {
    "transformers eager": _transformers_eager,
    "transformers torch.compile static cache": _transformers_compiled,
    "onnxruntime-genai builder fp32": _ort_genai,
    "accelir -> onnxruntime": _accelir("onnxruntime"),
    "accelir -> xla": _accelir("xla"),
}


def run_model(name: str, *, quick: bool, prompt: int, new: int, threads: int, rounds: int) -> list[dict[str, Any]]:
    """One row per system: build time, first-token and per-token medians, same tokens as eager, or the error."""
    import torch
    from accelir.generation import GenerationTiming
    torch.manual_seed(0)
    model = MODELS[name](quick)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt))
    rows: dict[str, dict[str, Any]] = {OPTIMUM: {"system": OPTIMUM, "note": OPTIMUM_NOTE}}
    runs: dict[str, Callable[[Any], Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, build in SYSTEMS.items():
            t0 = time.perf_counter()
            try:
                runs[label] = build(model, ids, new, tmp, threads)
                GenerationTiming.measure(runs[label])  # warm-up (compiles, first-call set-up)
                rows[label] = {"system": label, "build": time.perf_counter() - t0, "timings": []}
            except Exception as e:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
                runs.pop(label, None)
                rows[label] = {"system": label, "note": _first_line(e)}
        for r in range(rounds):
            for label in rotated(list(runs), r):
                rows[label]["timings"].append(GenerationTiming.measure(runs[label]))
    reference = rows["transformers eager"]["timings"][0].tokens.tolist() if "transformers eager" in runs else None
    out = []
    for label in list(SYSTEMS) + [OPTIMUM]:
        row = rows[label]
        timings = row.pop("timings", [])
        if timings:
            row["first_ms"] = statistics.median(t.first_token for t in timings) * 1e3
            row["token_ms"] = statistics.median(t.per_token for t in timings) * 1e3
            row["same"] = timings[0].tokens.tolist() == reference
        out.append(row)
    return out


def _table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"| {name} | first token ms | per token ms | per token / eager | build s | eager's tokens |",
             "|---|---|---|---|---|---|"]
    eager = next((r["token_ms"] for r in rows if r["system"] == "transformers eager" and "token_ms" in r), None)
    for r in rows:
        if "token_ms" not in r:
            lines.append(f"| {r['system']} | - | - | - | - | {r.get('note', '')} |")
            continue
        ratio = f"{r['token_ms'] / eager:.2f}" if eager else "-"
        lines.append(f"| {r['system']} | {r['first_ms']:.1f} | {r['token_ms']:.2f} | {ratio} | {r['build']:.1f} | "
                     f"{'yes' if r['same'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per runtime")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 32; 8 with --quick)")
    parser.add_argument("--new", type=int, default=None, help="new tokens (default 128; 8 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny configs, few tokens, one round: a check that "
                        "the script runs, not a measurement")
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    from benchmarks.run import _set_threads  # noqa: PLC2701 - the thread setting every benchmark shares
    _set_threads(opts.threads)
    guard = guard_from(opts, threads=opts.threads)
    prompt = opts.prompt or (8 if opts.quick else 32)
    new = opts.new or (8 if opts.quick else 128)
    rounds = opts.rounds or (1 if opts.quick else 5)
    tables = []
    for name in [m.strip() for m in opts.models.split(",") if m.strip()]:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        with guard.watch() as load:
            rows = run_model(name, quick=opts.quick, prompt=prompt, new=new, threads=opts.threads, rounds=rounds)
        tables.append(f"{name}{' (tiny)' if opts.quick else ''}: {load[0]}\n\n" + _table(name, rows))
    print(guard.finish())
    print(f"prompt {prompt}, {new} new tokens greedy, batch 1, {opts.threads} thread(s) per runtime, medians of "
          f"{rounds} round(s) after a warm-up\n")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
