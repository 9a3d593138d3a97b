"""Benchmark: text generation with a key/value cache, accelir against the generation peers.

Full-size GPT-2 small and a Qwen2-0.5B-size config (random weights), a 32-token prompt,
128 new tokens greedy (``min_new_tokens`` too, so every system makes all of them), batch 1,
``--threads`` intra-op threads per runtime (a list such as ``1,2`` runs each count in a fresh
process: XLA's thread count is fixed when jax starts).  For each system: the time to the first
token (prefill), the median per-token decode latency, the build time, and whether its tokens
are transformers' eager tokens.  Systems, timed in interleaved rounds whose order rotates:

- transformers eager ``generate`` (DynamicCache);
- transformers ``generate`` with a static cache and the forward under ``torch.compile``;
- onnxruntime-genai's model builder output (fp32, CPU; the builder reads the
  ``save_pretrained`` directory), where the builder supports the architecture;
- optimum's ``ORTModelForCausalLM``: listed, not run (it needs transformers<4.58);
- accelir -> onnxruntime and accelir -> XLA (``accelir.optimize`` + ``cm.generate``), in float32,
  and with int4 (block 32; MatMulNBits at accuracy level 4 on onnxruntime's CPU, x rounded to int8 per
  block, ``accelir.precision.int4_accuracy_level``) and int8 weights (``precision=``, every layer quantised whatever its
  error, as onnxruntime's quantisers do; the row gives the prefill logits' cosine to float32,
  since quantised tokens may differ from eager's).

A system that does not install or run here is a row saying why, never dropped.

Two more measurements per model:

- **Flat latency.** The per-token decode time at past lengths 32, 128, 512 and 1024 (a prompt just
  short of each, a few steps timed), for eager and accelir's float systems.  Attention itself reads
  the whole cache each step, so its cost grows linearly with the past in any runtime; the target is
  that the rest stays flat (within 20%).  Attention's own growth is measured, not fitted: one decode
  step's attention alone, every layer, over a cache of each length (eager torch's
  ``scaled_dot_product_attention``).  A linear fit could not tell it apart from a per-step copy of
  the cache, which also grows linearly and is what the check is for.  The table gives each system's
  ratio to the shortest past, and ``(t(L) - (attn(L) - attn(L0))) / t(L0)``: at most 1.20 is flat.
- **Peak memory.** Each system in a fresh process that first imports every runtime (torch,
  transformers, onnxruntime, jax, accelir), so each figure counts the same libraries; then the
  resident set (VmRSS) is noted, the user's torch model is built, the resident set is noted again
  and the peak is reset (``/proc/self/clear_refs``), the system is built and one generation runs.
  The target (at most weights + cache + 25%) is checked against the **added peak**: the peak
  resident set (VmHWM) after the reset minus the resident set with the model built, i.e. what the
  system adds to the process that holds the user's model (its build and its libraries' first use
  included).  Also printed, the same way for every system: the whole process's peak (VmHWM, all
  of it), the peak over the imports' baseline (the torch model included), the model alone, and the
  resident set after generating.
- **Export size.** Each accelir onnxruntime system's exported pair (``lm.onnx``, ``lm.decode.onnx``
  and their data) on disk, beside the distinct weights its two graphs hold.

The machine's load is recorded; a run under load prints no table unless ``--allow-load``.  Each
timed generation (and each flat-latency measurement) runs between two readings of the machine's
memory bandwidth (``benchmarks.conditions.BandwidthProbe``): one taken while a neighbour on a shared
host held the memory bandwidth down is retaken; one still taken so is flagged in the timing table,
or (a flat-latency run) counted in the probe's line above the tables.

The bandwidth drifts within seconds, so whole generations taken in turn cannot rank two systems that
run the same kernels.  ``--paired`` with two onnxruntime systems in ``--systems`` runs their
generations in lockstep: each in a thread of its own, handing over to the other at every token, so a
token's time is its own turn only and token k of the two run tens of milliseconds apart; it reports
the median of the per-token ratios (first named / second) and their quartiles.  Both sessions then
stop their thread pool's spinning once a run returns (``session.force_spinning_stop``; within a run
the pool spins as always): left spinning, a pool takes a core for about 40 ms after its run, and
each system's step ran at half speed in the other's wake.

Needs a quiet machine.  On 2 CPUs GPT-2 small takes about ten minutes a thread count at three
rounds, the Qwen2-0.5B size about half an hour at two (most of it building each system twice, the
second time for its memory); a run may take a model and a thread count at a time, and a thread
count that finds the machine still loaded by the one before is refused (rerun it alone):

    python benchmarks/generate.py --threads 1,2        # full-size models, one and two threads
    python benchmarks/generate.py --models gpt2 --threads 1
    python benchmarks/generate.py --quick --allow-load # tiny configs, 8 tokens, one round (a check)
    python benchmarks/generate.py --models qwen2-0.5b --threads 2 --rounds 6 --paired \
        --systems "accelir -> onnxruntime,onnxruntime-genai builder fp32"
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.conditions import BandwidthProbe, add_load_arguments, guard_from, rotated  # noqa: E402

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


Generator = Callable[[Any, int, Any], Any]  # (prompt ids, new tokens, streamer) -> tokens


def _transformers_eager(model: Any, tmp: str, threads: int) -> Generator:
    return lambda ids, n, streamer: model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                   streamer=streamer)


def _transformers_compiled(model: Any, tmp: str, threads: int) -> Generator:
    import torch
    import torch._inductor.config as inductor_config
    # inductor compiles in a pool of worker processes (one per core by default): held to the benchmark's
    # threads like every other system, and so the load check does not count the peer's build as another process
    inductor_config.compile_threads = threads
    compiled = copy.deepcopy(model)  # the eager peer keeps its own forward
    compiled.forward = torch.compile(compiled.forward)
    return lambda ids, n, streamer: compiled.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                      cache_implementation="static", streamer=streamer)


def _ort_genai(model: Any, tmp: str, threads: int) -> Generator:
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

    def generate(ids: Any, n: int, streamer: Any) -> Any:
        prompt = ids.numpy().astype(np.int32)
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


#: onnxruntime session config entries every onnxruntime system of the run gets (``--paired`` sets one)
SESSION_CONFIG: dict[str, str] = {}
#: what ``--paired`` gives them: onnxruntime's intra-op pool spins about 40 ms after a run returns, taking a
#: core from whichever system runs next (two 50 ms steps in lockstep each took twice their time); the pool
#: still spins within a run
SPINNING_STOP = {"session.force_spinning_stop": "1"}
#: the systems ``--paired`` can put in lockstep: those whose runtime's idle spinning it can stop
PAIRABLE = ("onnxruntime-genai builder fp32", "accelir -> onnxruntime", "accelir -> onnxruntime int4",
            "accelir -> onnxruntime int8")


def _set_genai_threads(path: str, threads: int) -> None:
    """The builder's session options with ``threads`` intra-op threads, as accelir's sessions get them
    (left alone, onnxruntime-genai's session takes every core), and the run's ``SESSION_CONFIG`` (an entry
    onnxruntime-genai does not know goes to ``AddConfigEntry``)."""
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = threads
    options.update(SESSION_CONFIG)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=4)


#: the budget of the int4 / int8 rows: every layer quantised whatever its error (what onnxruntime's
#: quantisers do, and what a row of per-token speed with int4 weights asks); its error is reported
EVERY_LAYER = {"max_abs": 1e30}


def _accelir(backend: str, precision: str = "fp32") -> Callable[..., Generator]:
    def build(model: Any, tmp: str, threads: int) -> Generator:
        import accelir
        prompt = _prompt(model, 8)
        cm = accelir.optimize(model, (prompt,), backend=backend, precision=precision,
                              accuracy=None if precision == "fp32" else EVERY_LAYER)
        if backend == "onnxruntime" and threads:  # the benchmark's thread count, as benchmarks.run gives accelir's sessions
            from accelir.generation import OrtSteps
            cm._stepper = cm._runner = OrtSteps.build(cm.decode_graph, threads=threads,  # one session, as optimize's
                                                      config=dict(SESSION_CONFIG) or None)

        def generate(ids: Any, n: int, streamer: Any) -> Any:
            return cm.generate(ids, max_new_tokens=n, min_new_tokens=n, streamer=streamer)
        generate.report = cm.report.precision  # type: ignore[attr-defined]
        generate.compiled = cm  # type: ignore[attr-defined]
        return generate
    return build


SYSTEMS: dict[str, Callable[..., Generator]] = {
    "transformers eager": _transformers_eager,
    "transformers torch.compile static cache": _transformers_compiled,
    "onnxruntime-genai builder fp32": _ort_genai,
    "accelir -> onnxruntime": _accelir("onnxruntime"),
    "accelir -> xla": _accelir("xla"),
    "accelir -> onnxruntime int4": _accelir("onnxruntime", "int4"),
    "accelir -> xla int4": _accelir("xla", "int4"),
    "accelir -> onnxruntime int8": _accelir("onnxruntime", "int8"),
    "accelir -> xla int8": _accelir("xla", "int8"),
}
#: the systems of the flat-latency check (the float ones: their logits are comparable step for step)
FLAT_SYSTEMS = ("transformers eager", "accelir -> onnxruntime", "accelir -> xla")
#: what ``--quick`` leaves out to stay a fast check: the XLA int4 / int8 rows (the same code as the
#: onnxruntime ones, and XLA compiles each graph the precision search measures), and the peak memory of
#: all but one system (the fresh-process measurement)
QUICK_SKIPS = ("accelir -> xla int4", "accelir -> xla int8")
QUICK_MEMORY = ("accelir -> onnxruntime int4",)


def _prompt(model: Any, length: int, seed: int = 0) -> Any:
    import torch
    return torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


def _build_model(name: str, quick: bool) -> Any:
    import torch
    torch.manual_seed(0)
    return MODELS[name](quick)


class _Baton:
    """Two generations in lockstep: one runs while the other waits, handing over at every token."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.holder = 0
        self.done = [False, False]

    def wait_turn(self, me: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.holder == me or self.done[1 - me])

    def hand_over(self, me: int) -> None:
        with self.cond:
            if not self.done[1 - me]:
                self.holder = 1 - me
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.holder == me or self.done[1 - me])

    def finish(self, me: int) -> None:
        with self.cond:
            self.done[me] = True
            self.holder = 1 - me
            self.cond.notify_all()


def lockstep(runs: Sequence[Callable[[Any], Any]]) -> list[tuple[float, list[float], Any]]:
    """Two generations, token by token in turn: each runs in a thread of its own and hands over to the
    other at every token its streamer is given, so the two token k's run a few tens of milliseconds
    apart, under the same memory bandwidth and load (on a shared host these drift by up to 1.5x within
    seconds, more than two systems of the same kernels differ).  Per system: the first token's time,
    each later token's time (from its turn starting to its token), and the tokens."""
    baton = _Baton()
    stamps: list[list[tuple[float, float]]] = [[], []]
    results: list[Any] = [None, None]
    errors: list[BaseException | None] = [None, None]

    class Streamer:
        def __init__(self, me: int) -> None:
            self.me = me
            self.resumed = time.perf_counter()

        def put(self, value: Any) -> None:
            done = time.perf_counter()
            stamps[self.me].append((self.resumed, done))
            baton.hand_over(self.me)
            self.resumed = time.perf_counter()

        def end(self) -> None:
            pass

    def work(me: int) -> None:
        try:
            baton.wait_turn(me)
            results[me] = runs[me](Streamer(me))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors[me] = e
        finally:
            baton.finish(me)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    out = []
    for me in (0, 1):
        spans = [done - resumed for resumed, done in stamps[me][1:]]  # [0] is the prompt's put
        out.append((spans[0] if spans else float("nan"), spans[1:], results[me]))
    return out


def paired_rows(labels: Sequence[str], runs: dict[str, Callable[[Any], Any]], rounds: int,
                probe: BandwidthProbe, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``rounds`` lockstep generations of the two systems (the one that starts alternating): each row's
    first-token and per-token medians as ``run_model`` takes them, and the paired per-token ratio."""
    from accelir.generation import GenerationTiming
    ratios: list[float] = []
    for r in range(rounds):
        pair = rotated(list(labels), r)
        result, fair = probe.measure(lambda: lockstep([runs[x] for x in pair]))
        by = dict(zip(pair, result))
        a, b = by[labels[0]][1], by[labels[1]][1]
        ratios += [x / y for x, y in zip(a, b)]
        for label in pair:
            first, steps, tokens = by[label]
            rows[label]["timings"].append(GenerationTiming(first, statistics.median(steps) if steps else float("nan"),
                                                           tokens))
            rows[label]["unfair"] += not fair
    from accelir.timing import Timing
    spread = Timing(tuple(ratios)) if ratios else Timing((float("nan"),))
    q1, q3 = spread.quartiles
    return {"systems": list(labels), "median": spread.median, "q1": q1, "q3": q3, "pairs": len(ratios),
            "rounds": rounds}


def paired_line(paired: dict[str, Any]) -> str:
    a, b = paired["systems"]
    return (f"Paired per-token ratio {a} / {b}, the two generations in lockstep (token k of each a few tens of "
            f"ms apart; both sessions with {', '.join(f'{k}={v}' for k, v in SPINNING_STOP.items())}): median "
            f"{paired['median']:.3f} (quartiles {paired['q1']:.3f}-{paired['q3']:.3f}) over {paired['pairs']} token "
            f"pairs in {paired['rounds']} round(s)")


def run_model(name: str, *, quick: bool, prompt: int, new: int, threads: int, rounds: int, tmp: str,
              probe: BandwidthProbe | None = None, systems: Sequence[str] | None = None,
              paired: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Generator], Any]:
    """One row per system: build time, first-token and per-token medians, same tokens as eager, or the error;
    and the built systems (for the flat-latency check) and the model.  Each timed generation runs through
    ``probe`` (retaken while the machine's memory bandwidth is down; a row says how many stayed so)."""
    from accelir.generation import GenerationTiming
    model = _build_model(name, quick)
    ids = _prompt(model, prompt)
    rows: dict[str, dict[str, Any]] = {OPTIMUM: {"system": OPTIMUM, "note": OPTIMUM_NOTE}}
    gens: dict[str, Generator] = {}
    runs: dict[str, Callable[[Any], Any]] = {}
    for label, build in SYSTEMS.items():
        if systems is not None and label not in systems:
            rows[label] = {"system": label, "note": "not asked for (--systems)"}
            continue
        if quick and label in QUICK_SKIPS:
            rows[label] = {"system": label, "note": "not run with --quick"}
            continue
        t0 = time.perf_counter()
        try:
            gens[label] = build(model, tmp, threads)
            runs[label] = functools.partial(gens[label], ids, new)
            GenerationTiming.measure(runs[label])  # warm-up (compiles, first-call set-up)
            rows[label] = {"system": label, "build": time.perf_counter() - t0, "timings": [], "unfair": 0}
        except Exception as e:  # noqa: BLE001 - a peer that cannot run here is reported, not fatal
            runs.pop(label, None)
            gens.pop(label, None)
            rows[label] = {"system": label, "note": _first_line(e)}
    probe = probe or BandwidthProbe()
    probe.settle()
    if paired is not None:  # the two systems in lockstep; the paired ratio goes into ``paired``
        pair = [label for label in (systems or SYSTEMS) if label in runs]  # the ratio: the first named / the second
        if len(pair) != 2:
            raise RuntimeError(f"--paired times two systems in lockstep; {len(pair)} built: {', '.join(pair) or 'none'}")
        paired.update(paired_rows(pair, runs, rounds, probe, rows))
    for r in range(0 if paired is not None else rounds):
        for label in rotated(list(runs), r):
            timing, fair = probe.measure(functools.partial(GenerationTiming.measure, runs[label]))
            rows[label]["timings"].append(timing)
            rows[label]["unfair"] += not fair
    reference = rows["transformers eager"]["timings"][0].tokens.tolist() if "transformers eager" in runs else None
    out = []
    for label in list(SYSTEMS) + [OPTIMUM]:
        row = rows[label]
        timings = row.pop("timings", [])
        if timings:
            row["first_ms"] = statistics.median(t.first_token for t in timings) * 1e3
            row["token_ms"] = statistics.median(t.per_token for t in timings) * 1e3
            row["same"] = None if reference is None else timings[0].tokens.tolist() == reference
            report = getattr(gens[label], "report", None)
            if report is not None:  # quantised: its tokens may differ; say how far its logits are
                row["error"] = f"logits cosine {report.errors.cosine:.4f} to fp32"
        out.append(row)
    return out, gens, model


def _table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"| {name} | first token ms | per token ms | per token / eager | build s | eager's tokens |",
             "|---|---|---|---|---|---|"]
    eager = next((r["token_ms"] for r in rows if r["system"] == "transformers eager" and "token_ms" in r), None)
    for r in rows:
        if "token_ms" not in r:
            lines.append(f"| {r['system']} | - | - | - | - | {r.get('note', '')} |")
            continue
        ratio = f"{r['token_ms'] / eager:.2f}" if eager else "-"
        same = ("not compared: eager not run" if r["same"] is None else "yes" if r["same"] else
                ("no, " + r["error"] if "error" in r else "NO"))
        low = f" ({r['unfair']} round(s) at low memory bandwidth)" if r.get("unfair") else ""
        lines.append(f"| {r['system']} | {r['first_ms']:.1f} | {r['token_ms']:.2f}{low} | {ratio} | {r['build']:.1f} | "
                     f"{same} |")
    return "\n".join(lines)


def export_sizes(gens: dict[str, Generator], tmp: str) -> str:
    """The exported ONNX pair's size on disk for each accelir onnxruntime system, beside the bytes of the
    distinct weights its two graphs hold (what the pair holds when it writes shared weights once)."""
    parts = []
    for label, gen in gens.items():
        cm = getattr(gen, "compiled", None)
        if cm is None or cm.backend != "onnxruntime":
            continue
        folder = os.path.join(tmp, "export-" + label.split()[-1])
        os.makedirs(folder)
        cm.export(os.path.join(folder, "lm.onnx"))
        on_disk = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        arrays = {(a.__array_interface__["data"][0], a.nbytes): a.nbytes for g in (cm.graph, cm.decode_graph)
                  for a in g.constants.values()}  # by memory: arrays both graphs share count once
        parts.append(f"{label}: {on_disk / 2**20:.1f} MiB on disk, {sum(arrays.values()) / 2**20:.1f} MiB of "
                     "distinct weight arrays in its two graphs")
    return "exported pair (lm.onnx + lm.decode.onnx + data): " + "; ".join(parts)


# ----- flat latency: per-token time against the past length --------------------------------

def _attention_shape(config: Any) -> tuple[int, int, int, int]:
    """(layers, heads, kv heads, head dim) from a transformers config (GPT-2's names or Llama's)."""
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    kv = getattr(config, "num_key_value_heads", None) or heads
    return layers, heads, kv, getattr(config, "head_dim", None) or hidden // heads


def attention_step_ms(config: Any, past: int, repeats: int = 20) -> float:
    """The median time of one decode step's attention alone, every layer, over a cache ``past`` long:
    eager torch's ``scaled_dot_product_attention`` of one query over the keys and values.  This is the
    growth with the past that attention itself brings (it reads the whole cache each step) in any runtime;
    what a system's per-token time grows beyond it is what the flat-latency target bounds."""
    import torch
    import torch.nn.functional as F
    layers, heads, kv, dim = _attention_shape(config)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, 1, dim, generator=g)
    cache = [(torch.randn(1, kv, past, dim, generator=g), torch.randn(1, kv, past, dim, generator=g))
             for _ in range(layers)]

    def step() -> None:
        with torch.no_grad():
            for k, v in cache:
                F.scaled_dot_product_attention(q, k, v, enable_gqa=kv != heads)
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def flat_latency(model: Any, gens: dict[str, Generator], pasts: list[int], steps: int,
                 probe: BandwidthProbe | None = None) -> dict[str, Any]:
    """Per-token decode ms of each flat-latency system at each past length (a prompt ``past - steps - 1``
    long, ``steps + 1`` new tokens: the steps run over pasts up to ``past``, within the position limit),
    and attention's own; each generation through ``probe`` (retaken while the memory bandwidth is down)."""
    from accelir.generation import GenerationTiming
    probe = probe or BandwidthProbe()
    out: dict[str, Any] = {"attention": [attention_step_ms(model.config, p) for p in pasts]}
    for label in FLAT_SYSTEMS:
        if label not in gens:
            continue
        times = []
        for p in pasts:
            run = functools.partial(gens[label], _prompt(model, p - steps - 1, seed=p), steps + 1)
            GenerationTiming.measure(run)  # warm-up: XLA compiles each prompt length
            times.append(statistics.median(probe.measure(functools.partial(GenerationTiming.measure, run))[0].per_token
                                           for _ in range(2)) * 1e3)
        out[label] = times
    return out


def _flat_table(name: str, pasts: list[int], flat: dict[str, Any]) -> str:
    """Each system's per-token ms by past length, its ratio to the first, and the ratio with attention's own
    growth taken out: ``(t(L) - (attn(L) - attn(L0))) / t(L0)``, against the target of at most 1.20."""
    attn = flat["attention"]
    head = " | ".join(f"past {p}" for p in pasts)
    lines = [f"| {name}: per-token ms | {head} | ratio to past {pasts[0]} | without attention's growth |",
             "|---|" + "---|" * (len(pasts) + 2)]
    for label, times in flat.items():
        cells = " | ".join(f"{t:.2f}" for t in times)
        ratio = " / ".join(f"{t / times[0]:.2f}" for t in times[1:])
        if label == "attention":
            lines.append(f"| attention alone (eager sdpa, every layer) | {cells} | {ratio} | - |")
            continue
        flat_ratio = [(t - (a - attn[0])) / times[0] for t, a in zip(times[1:], attn[1:])]
        verdict = "flat" if max(flat_ratio) <= 1.2 else "NOT flat"
        lines.append(f"| {label} | {cells} | {ratio} | {' / '.join(f'{r:.2f}' for r in flat_ratio)} ({verdict}) |")
    return "\n".join(lines)


# ----- peak memory: one fresh process per system ------------------------------------------

def _rss_mib(field_name: str) -> float:
    """VmRSS (now) or VmHWM (the peak) of this process, MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(label: str, name: str, quick: bool, prompt: int, new: int, threads: int) -> dict[str, Any]:
    """In a fresh process: import every runtime (so each system's figure counts the same libraries), note the
    resident set, build the model and the system, generate once; the peak resident set over the baseline,
    and the resident set the model alone added and the one left after the generation.  The system is built
    with its runtimes' own thread settings (``threads=0``: memory does not depend on them, and accelir's
    onnxruntime sessions are then the ones ``optimize`` made, not rebuilt beside them)."""
    import importlib
    for lib in ("torch", "transformers", "onnxruntime", "jax", "accelir"):
        importlib.import_module(lib)
    base = _rss_mib("VmRSS")
    model = _build_model(name, quick)
    with_model = _rss_mib("VmRSS")
    process_peak = _reset_peak()  # the model's own build peak (torch's init temporaries) is not the system's
    with tempfile.TemporaryDirectory() as tmp:
        gen = SYSTEMS[label](model, tmp, 0)
        gen(_prompt(model, prompt), new, _NullStreamer())
        after = _rss_mib("VmRSS") - base
    peak = _rss_mib("VmHWM")
    return {"system": label, "process_peak_mib": max(process_peak, peak), "peak_mib": max(process_peak, peak) - base,
            "added_peak_mib": peak - with_model, "model_mib": with_model - base, "after_mib": after}


def _reset_peak() -> float:
    """The process's peak resident set so far, MiB; then the peak starts again from the current resident
    set (``/proc/self/clear_refs``), so a later VmHWM is the peak since this call."""
    peak = _rss_mib("VmHWM")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    return peak


class _NullStreamer:
    def put(self, value: Any) -> None:
        pass

    def end(self) -> None:
        pass


def peak_memory(labels: list[str], name: str, opts: argparse.Namespace, prompt: int, new: int, threads: int
                ) -> list[dict[str, Any]]:
    """Each system's peak resident set over its process's baseline, each in a fresh process."""
    rows = []
    for label in labels:
        args = [sys.executable, os.path.abspath(__file__), "--memory-of", label, "--models", name, "--threads",
                str(threads), "--prompt", str(prompt), "--new", str(new)] + (["--quick"] if opts.quick else [])
        proc = subprocess.run(args, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("MEMORY ")), None)
        if line is None:
            err = [x for x in proc.stderr.splitlines() if x.strip()]
            rows.append({"system": label, "note": (err[-1] if err else f"exit {proc.returncode}")[:160]})
        else:
            rows.append(json.loads(line[len("MEMORY "):]))
    return rows


def weights_and_cache_mib(model: Any, tokens: int) -> tuple[float, float]:
    """The model's weights and a float32 cache of ``tokens`` tokens (keys and values, every layer), MiB."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    layers, _, kv, dim = _attention_shape(model.config)
    return weights, 2 * layers * kv * tokens * dim * 4 / 2**20


def _memory_table(name: str, rows: list[dict[str, Any]], weights: float, cache: float) -> str:
    target = 1.25 * (weights + cache)
    lines = [f"{name}: weights {weights:.1f} MiB (float32), cache {cache:.2f} MiB (float32, prompt + new tokens); "
             f"target: the peak a system adds to the process holding the user's model at most (weights + cache) "
             f"x 1.25 = {target:.1f} MiB",
             "", f"| {name}: system | added peak MiB (over the process with the model built; the target's) | "
             "/ (weights + cache) | whole process peak MiB | peak over the imports' baseline MiB | "
             "the torch model alone MiB | resident after generating MiB |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "peak_mib" not in r:
            lines.append(f"| {r['system']} | - | {r['note']} | - | - | - | - |")
        else:
            lines.append(f"| {r['system']} | {r['added_peak_mib']:.1f} | {r['added_peak_mib'] / (weights + cache):.2f} | "
                         f"{r['process_peak_mib']:.1f} | {r['peak_mib']:.1f} | {r['model_mib']:.1f} | "
                         f"{r['after_mib']:.1f} |")
    return "\n".join(lines)


def _thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"--threads {text!r}: give positive thread counts, e.g. 1 or 1,2")
    return counts


def _each_thread_count(argv: list[str], counts: list[int]) -> int:
    """Run this script once per thread count, each in a fresh process (XLA's thread count is fixed when jax
    starts); their outputs follow one another."""
    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == "--threads":
            skip = True
        elif not a.startswith("--threads="):
            rest.append(a)
    status = 0
    for n in counts:
        print(f"===== {n} thread(s) per runtime =====", flush=True)
        status |= subprocess.run([sys.executable, os.path.abspath(__file__), *rest, "--threads", str(n)]).returncode
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--threads", default="1", help="intra-op threads per runtime, or a list (1,2): each count "
                        "runs in a fresh process")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 32; 8 with --quick)")
    parser.add_argument("--new", type=int, default=None, help="new tokens (default 128; 8 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; 1 with --quick)")
    parser.add_argument("--past", default=None, help="past lengths of the flat-latency check (default "
                        "32,128,512,1024; 8,32 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny configs, few tokens, one round: a check that "
                        "the script runs, not a measurement")
    parser.add_argument("--systems", default=None, help="comma-separated, from the table's system names (default: "
                        "all); e.g. two systems interleaved alone, without the others' runtimes in the process")
    parser.add_argument("--paired", action="store_true", help="with two --systems: run their generations token by "
                        "token in lockstep and report the paired per-token ratio (each token k of the two under the "
                        "same machine conditions)")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # one system's peak, in a child
    add_load_arguments(parser)
    opts = parser.parse_args(argv)
    counts = _thread_counts(opts.threads)
    if len(counts) > 1:
        return _each_thread_count(argv, counts)
    threads = counts[0]
    from benchmarks.run import _set_threads  # noqa: PLC2701 - the thread setting every benchmark shares
    _set_threads(threads)
    prompt = opts.prompt or (8 if opts.quick else 32)
    new = opts.new or (8 if opts.quick else 128)
    if opts.memory_of:
        print("MEMORY " + json.dumps(_memory_child(opts.memory_of, opts.models, opts.quick, prompt, new, threads)))
        return 0
    guard = guard_from(opts, threads=threads)
    systems = None if opts.systems is None else [x.strip() for x in opts.systems.split(",") if x.strip()]
    unknown = sorted(set(systems or ()) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(map(repr, unknown))}; choose from {', '.join(SYSTEMS)}")
    SESSION_CONFIG.clear()  # this run's settings only
    if opts.paired:
        if len(set(systems or ())) != 2:
            parser.error("--paired needs --systems naming two different systems (one system in lockstep with itself "
                         "would wait on its own generation)")
        other = [x for x in systems if x not in PAIRABLE]
        if other:
            parser.error(f"--paired runs onnxruntime systems only ({', '.join(PAIRABLE)}): their sessions can be told "
                         f"to stop spinning once a run returns; {', '.join(other)} would spin into the other's turn")
        SESSION_CONFIG.update(SPINNING_STOP)
    rounds = opts.rounds or (1 if opts.quick else 5)
    pasts = [int(p) for p in (opts.past or ("8,32" if opts.quick else "32,128,512,1024")).split(",")]
    steps = 4 if opts.quick else 8
    tables = []
    for name in [m.strip() for m in opts.models.split(",") if m.strip()]:
        if name not in MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        probe = BandwidthProbe()
        with guard.watch() as load, tempfile.TemporaryDirectory() as tmp:
            paired: dict[str, Any] | None = {} if opts.paired else None
            rows, gens, model = run_model(name, quick=opts.quick, prompt=prompt, new=new, threads=threads,
                                          rounds=rounds, tmp=tmp, probe=probe, systems=systems, paired=paired)
            flat = flat_latency(model, gens, pasts, steps, probe)
            sizes = export_sizes(gens, tmp)
        del gens
        ran = [r["system"] for r in rows if "token_ms" in r]
        memory = peak_memory([s for s in (QUICK_MEMORY if opts.quick else ran)], name, opts, prompt, new, threads)
        weights, cache = weights_and_cache_mib(model, prompt + new)
        tables.append(f"{name}{' (tiny)' if opts.quick else ''}: {load[0]}; {probe.summary()}\n\n"
                      + _table(name, rows) + "\n\n" + (paired_line(paired) + "\n\n" if paired else "")
                      + _flat_table(name, pasts, flat) + "\n\n" + _memory_table(name, memory, weights, cache)
                      + "\n\n" + sizes)
    print(guard.finish())
    from accelir.precision import int4_accuracy_level
    print(f"prompt {prompt}, {new} new tokens greedy, batch 1, {threads} thread(s) per runtime, medians of "
          f"{rounds} round(s) after a warm-up; int4 / int8 rows quantise every layer (block 32 for int4, at "
          f"MatMulNBits accuracy level {int4_accuracy_level('onnxruntime', 'cpu')} on onnxruntime); "
          f"flat-latency check: {steps} steps around each past length\n")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
