"""Sweep: every transformers vision, audio and text model that torch.export captures, on both backends.

The models come from the installed transformers' auto mappings: a model type belongs to the
first family whose task mappings name it (audio: audio classification, CTC; vision: image
classification, image base models; text: causal LM, masked LM, sequence classification), and
each type contributes its base model (``MODEL_MAPPING_NAMES``), or its first task head where it
has no base model; ``--heads`` adds the family's task heads.  Each is built from its config
class's defaults, shrunk by :func:`shrink_config` (layers, widths, heads, vocabulary, image size;
a gentler shrink when the aggressive one does not build or run), with random weights from a fixed
seed, in eval mode, with random batch-norm statistics and no constant parameter, and called on an
input of its modality (``input_ids``, ``pixel_values``, ``input_values`` or ``input_features``, by the model's
``main_input_name``), and a fixed-seed ``noise`` where the model takes one in place of a ``torch.rand``
draw in forward (ViT-MAE's random masking).  Then:

1. ``torch.export.export`` (non-strict, then strict): a model it cannot capture is recorded as
   "torch.export fails" and left out of the target;
2. ``accelir.capture`` once, then ``accelir.optimize`` on ``onnxruntime`` and on ``xla``, each
   compared with eager torch by :func:`accelir.accuracy.measure` against the float32 budget
   (``accelir.accuracy.DEFAULT_BUDGETS["fp32"]``).

Models with composite configs (vision-text, encoder-decoder: their configs hold sub-configs) are
listed as skipped, "composite".  Each model runs in a worker subprocess with a timeout, so that a
hang or a crash costs that model only (the worker is restarted; it is also restarted every
``--restart-every`` models).  Results are written as they come: ``transformers_sweep.json``
(machine-readable, one record a model; ``--resume`` keeps the records already there) and
``transformers_sweep.md`` (a table of counts per family, then every failure with its reason), in
``benchmarks/results/`` by default.  This is an accuracy sweep, not a timing: the machine's load
does not change its figures.

    python benchmarks/transformers_sweep.py                        # every family, base models
    python benchmarks/transformers_sweep.py --families text --models bert,gpt2 --resume
    python benchmarks/transformers_sweep.py --quick                # three models, one per family (a check)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from typing import Any

if not __package__:  # run as a script: make the repo root importable, as ``-m`` does
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["FAMILIES", "Case", "enumerate_cases", "shrink_config", "run_case", "sweep", "summarize", "main"]

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

#: family -> the task mappings (``MODEL_FOR_<TASK>_MAPPING_NAMES``) whose model types belong to it,
#: in the order a type shared by families is assigned (the first family naming it wins).
FAMILIES: dict[str, tuple[str, ...]] = {
    "audio": ("AUDIO_CLASSIFICATION", "CTC"),
    "vision": ("IMAGE_CLASSIFICATION", "IMAGE"),
    "text": ("CAUSAL_LM", "MASKED_LM", "SEQUENCE_CLASSIFICATION"),
}
QUICK = ("bert", "vit", "wav2vec2")
BATCH, SEQ, IMAGE, AUDIO_SAMPLES, AUDIO_FRAMES = 2, 16, 64, 4000, 64
MARK = "@@transformers_sweep@@ "  # prefixes the worker's result lines; the models print on stdout too
STAGE = "@@transformers_sweep_stage@@ "  # prefixes the stage the worker enters, named when a model times out


def _stage(name: str) -> None:
    print(STAGE + name, flush=True)


@dataclass(frozen=True)
class Case:
    """One model class to sweep: ``model_type`` (the config's key) and the class name."""

    family: str
    model_type: str
    class_name: str

    @property
    def name(self) -> str:
        return f"{self.model_type}:{self.class_name}"


@dataclass
class Record:
    """What happened to one model.  ``status``: "composite", "build" (no small config built and
    ran eagerly), "export" (torch.export fails), "captured" (then ``backends`` holds each backend's
    "match", "mismatch", "error" (an AccelirError) or "raw" (another exception, a bug)),
    "timeout" or "crash"."""

    family: str
    name: str
    status: str
    reason: str = ""
    tier: int | None = None
    export_mode: str = ""
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


# ----- which models ------------------------------------------------------------------

def _first(names: Any) -> str:
    return names[0] if isinstance(names, (tuple, list)) else names


def enumerate_cases(families: tuple[str, ...] = tuple(FAMILIES), heads: bool = False) -> list[Case]:
    """The model classes of ``families`` from the installed transformers' auto mappings."""
    from transformers.models.auto import modeling_auto

    def mapping(task: str) -> dict[str, Any]:
        return getattr(modeling_auto, f"MODEL_FOR_{task}_MAPPING_NAMES", {})

    family_of: dict[str, str] = {}
    for family, tasks in FAMILIES.items():
        for task in tasks:
            for model_type in mapping(task):
                family_of.setdefault(model_type, family)
    cases: list[Case] = []
    for model_type, family in family_of.items():
        if family not in families:
            continue
        heads_of_type = [_first(mapping(t)[model_type]) for t in FAMILIES[family] if model_type in mapping(t)]
        base = modeling_auto.MODEL_MAPPING_NAMES.get(model_type)
        classes = [_first(base)] if base else heads_of_type[:1]
        if heads:
            classes += [c for c in heads_of_type if c not in classes]
        cases += [Case(family, model_type, c) for c in dict.fromkeys(classes)]
    by_family = [sorted((c for c in cases if c.family == f), key=lambda c: (c.model_type, c.class_name))
                 for f in FAMILIES]
    turns = zip_longest(*by_family)  # the families take turns, so that a sweep cut short has some of each
    return [c for turn in turns for c in turn if c is not None]


# ----- a small config --------------------------------------------------------------------

_LAYERS = re.compile(r"^(num_hidden_layers|num_layers|n_layers?|encoder_layers|decoder_layers|num_\w+_layers)$")
_HEADS = re.compile(r"^(num_attention_heads|n_heads?|num_heads|\w+_attention_heads)$")
_WIDTH = {"hidden_size": 32, "d_model": 32, "emb_dim": 32, "n_embd": 32, "embed_dim": 32, "dim": 32,
          "embedding_size": 32, "hidden_size_per_layer_input": 16, "ffn_hidden_size": 64,
          "expert_ffn_hidden_size": 32, "zero_expert_num": 2,
          "head_dim": 16, "attention_head_size": 16, "intermediate_size": 64, "ffn_dim": 64, "n_inner": 64,
          "d_ff": 64, "d_inner": 64, "hidden_dim": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
          "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts": 4,
          "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
          "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "n_group": 1, "topk_group": 1,
          "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
          "rotary_dim": 8, "state_size": 16, "mamba_d_state": 16, "d_state": 16, "n_groups": 1,
          "mamba_n_groups": 1, "mamba_d_head": 16}
#: (heads, head width, expansion) of state-space mixers: heads x width must be expansion x hidden size
_SSM_HEADS = (("num_heads", "head_dim", "expand"), ("mamba_n_heads", "mamba_d_head", "mamba_expand"))
_UNSET = {"num_experts_per_tok": 2, "head_dim": 16, "num_key_value_heads": 2}  # hidden 32 / heads 2
_SCALES = {"depth_coefficient": 0.25, "depth_multiplier": 0.25}  # widths are tied to other fields
_WIDTH_LISTS = {"hidden_sizes": 16, "embed_dims": 16, "conv_dim": 32, "tdnn_dim": 32}
_TOKENS = re.compile(r"^\w*_token_ids?$")
VOCAB = 256
MAX_PARAMETERS = 50_000_000  # a gentler shrink that leaves more is not run: too slow on a CPU


def _overrides(config: Any, tier: int) -> dict[str, Any]:
    """The config values to change at ``tier`` (0: layers, widths, heads, vocabulary, image size;
    1: layers, stage depths, vocabulary, image size, width and depth multipliers; 2: layers and stage
    depths only)."""
    import inspect
    params = inspect.signature(type(config).__init__).parameters  # derived fields are not set, but computed
    values = {k: v for k, v in vars(config).items() if k in params}
    out: dict[str, Any] = {}
    for key, v in values.items():
        if key in _UNSET and v is None:  # some defaults leave the experts unset, and then cannot build
            out[key] = _UNSET[key]
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int) and _LAYERS.match(key) and v > 2:
            out[key] = 2
        elif key == "depths" and isinstance(v, (list, tuple)):
            out[key] = [1] * len(v)
        elif tier >= 2:
            continue
        elif key == "image_size" and isinstance(v, int) and v > IMAGE:
            out[key] = IMAGE
        elif key == "image_size" and isinstance(v, (list, tuple)) and max(v) > IMAGE:
            out[key] = [IMAGE] * len(v)
        elif "vocab_size" in key and isinstance(v, int) and v > VOCAB:  # entity and per-layer vocabularies too
            out[key] = VOCAB
        elif key in _SCALES and isinstance(v, float):
            out[key] = min(v, _SCALES[key])
        elif tier >= 1:
            continue
        elif isinstance(v, int) and _HEADS.match(key):
            out[key] = min(v, 2)
        elif key == "num_key_value_heads" and isinstance(v, int):
            out[key] = 1 if v < values.get("num_attention_heads", v) else min(v, 2)
        elif key in _WIDTH and isinstance(v, int):
            out[key] = min(v, _WIDTH[key])
        elif key in _WIDTH_LISTS and isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v):
            base = _WIDTH_LISTS[key]
            out[key] = [min(x, base if key in ("conv_dim", "tdnn_dim") else base * 2 ** i) for i, x in enumerate(v)]
        elif key == "num_heads" and isinstance(v, (list, tuple)):
            out[key] = [min(x, 2 ** i) for i, x in enumerate(v)]
    _per_layer_lists(values, out)
    for heads, width, expand in _SSM_HEADS:
        if tier == 0 and all(isinstance(values.get(k), int) for k in (heads, width, expand)):
            hidden = out.get("hidden_size", values.get("hidden_size"))
            if isinstance(hidden, int):
                out[heads] = max(1, values[expand] * hidden // out.get(width, values[width]))
    if "vocab_size" in out:  # special token ids must stay inside the smaller vocabulary
        for key, v in values.items():
            if _TOKENS.match(key) and v is not None:
                ids = v if isinstance(v, (list, tuple)) else [v]
                fixed = [i if not isinstance(i, int) or i < VOCAB else VOCAB - 1 - n for n, i in enumerate(ids)]
                out[key] = fixed if isinstance(v, (list, tuple)) else fixed[0]
    if "use_cache" in values:
        out["use_cache"] = False
    return out


def _per_layer_lists(values: dict[str, Any], out: dict[str, Any]) -> None:
    """Lists with one entry a layer (``layer_types``, block patterns) cut to the new layer count,
    keeping one layer of each kind first (a sliding and a full attention layer, say); the count
    grows to at most 4 where there are more kinds."""
    layers = [k for k in out if _LAYERS.match(k) and k in values and isinstance(values[k], int)]
    if not layers:
        return
    before = values[layers[0]]
    for key, v in values.items():
        if isinstance(v, (list, tuple)) and len(v) == before and before > 2 and key not in out \
                and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            kinds = list(dict.fromkeys(v))
            n = min(max(out[layers[0]], len(kinds)), 4)
            out[key] = (kinds + list(v))[:n]
            for k in layers:
                if values[k] == before:
                    out[k] = n


def shrink_config(config_class: type, tier: int = 0) -> Any:
    """``config_class``'s defaults made small (see ``_overrides``); derived fields (layer types,
    head dims) are computed again by the config's own constructor from the changed values."""
    return config_class(**_overrides(config_class(), tier))


_PARTS = re.compile(r"text|vision|audio|speech|image|encoder|decoder|backbone|vq|patch|fov|model|global")


def composite_reason(config: Any) -> str:
    """Why ``config`` is composite (sub-configs of other models: vision-text, encoder-decoder, a
    backbone), or "".  Sub-configs of one model's own parts (``attn_config``, ``ffn_config``) are not."""
    subs = sorted(k for k in (getattr(config, "sub_configs", None) or {}) if _PARTS.search(k))
    if subs:
        return "composite: " + ", ".join(subs)
    return "composite: encoder-decoder" if getattr(config, "is_encoder_decoder", False) else ""


# ----- one model -------------------------------------------------------------------------

def _example_inputs(model: Any, config: Any) -> list[dict[str, Any]]:
    """Candidate inputs of the model's modality, the likelier first (feature layouts differ)."""
    import torch
    gen = torch.Generator().manual_seed(0)
    name = getattr(model, "main_input_name", "input_ids")
    if name == "input_ids":
        vocab = int(getattr(config, "vocab_size", VOCAB) or VOCAB)
        return [{name: torch.randint(0, vocab, (BATCH, SEQ), generator=gen)}]
    if name == "pixel_values":
        size = getattr(config, "image_size", IMAGE)
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        channels, frames = getattr(config, "num_channels", 3), getattr(config, "num_frames", None)
        video = [{name: torch.randn(BATCH, frames, channels, h, w, generator=gen)}] if isinstance(frames, int) else []
        return [{name: torch.randn(BATCH, channels, h, w, generator=gen)}] + video  # or frames of a video
    bins = next((getattr(config, k) for k in ("feature_projection_input_dim", "num_mel_bins", "feature_size",
                                              "input_feat_per_channel")
                 if isinstance(getattr(config, k, None), int)), 80)
    if name == "input_values":  # a waveform, or a spectrogram of the config's length (AST)
        frames = getattr(config, "max_length", AUDIO_FRAMES)
        return [{name: torch.randn(BATCH, AUDIO_SAMPLES, generator=gen)},
                {name: torch.randn(BATCH, frames if isinstance(frames, int) else AUDIO_FRAMES, bins, generator=gen)}]
    if name == "input_features":
        return [{name: torch.randn(BATCH, AUDIO_FRAMES, bins, generator=gen)},
                {name: torch.randn(BATCH, bins, AUDIO_FRAMES, generator=gen)}]
    raise ValueError(f"main input {name!r} is not one of this sweep's modalities")


def _noise_of(model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``noise`` for a model whose forward takes it and draws it with ``torch.rand`` when it is not given
    (transformers' masked autoencoders: ViT-MAE's random masking): a fixed-seed tensor of the shape the
    model draws, found by watching one eager call, so that eager torch and accelir mask the same patches."""
    import inspect

    import torch
    from torch.overrides import TorchFunctionMode
    if "noise" not in inspect.signature(model.forward).parameters:
        return {}
    shapes = []

    class Draws(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.rand:
                shapes.append(tuple(out.shape))
            return out

    with torch.no_grad(), Draws():
        model(**kwargs)
    return {"noise": torch.rand(shapes[0], generator=torch.Generator().manual_seed(2))} if shapes else {}


def _randomize_constants(model: Any) -> None:
    """Batch-norm running statistics away from (0, 1), so that folding them is tested, and noise on
    every parameter that the model's init left constant (zero gates and biases, unit norm scales):
    a zero router ties every expert, and which of equal scores ``topk`` picks is the kernel's choice;
    a zero projection hides its whole branch from the comparison."""
    import torch
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for m in model.modules():
            if isinstance(getattr(m, "running_var", None), torch.Tensor) and m.running_var.is_floating_point():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _tensors(output: Any) -> list[Any]:
    import torch
    from torch.utils import _pytree as pytree
    return [x for x in pytree.tree_leaves(output) if isinstance(x, torch.Tensor)]


def build(case: Case) -> tuple[Any, dict[str, Any], list[Any], int]:
    """The model at the smallest tier that builds and runs eagerly, its input and eager outputs.
    A model over ``MAX_PARAMETERS`` is not built: its size is read on the meta device first."""
    import torch
    import transformers
    from transformers import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[case.model_type]
    model_class = getattr(transformers, case.class_name)
    error: Exception | None = None
    for tier in range(3):
        try:
            config = shrink_config(config_class, tier)
            if "SequenceClassification" in case.class_name and getattr(config, "pad_token_id", 0) is None:
                config.pad_token_id = VOCAB - 1  # the head pools the last token that is not padding
            with torch.device("meta"):  # the size before the weights are made
                size = sum(p.numel() for p in model_class(config).parameters())
            if size > MAX_PARAMETERS:
                raise RuntimeError(f"{size / 1e6:.0f}M parameters at shrink tier {tier}")
            torch.manual_seed(0)
            model = model_class(config).eval()
            _randomize_constants(model)
            for kwargs in _example_inputs(model, config):
                try:
                    kwargs = {**kwargs, **_noise_of(model, kwargs)}
                    with torch.no_grad():
                        return model, kwargs, _tensors(model(**kwargs)), tier
                except Exception as e:  # noqa: BLE001 - any failure of the model's own forward
                    error = error or e
        except Exception as e:  # noqa: BLE001 - a config or constructor that refuses the shrunk values
            error = error or e
    raise RuntimeError(_line(error))  # the smallest config's reason: the gentler ones often only grow too big


def _line(e: BaseException | None) -> str:
    """One line for the record; a message whose first line only announces the next one keeps both."""
    from accelir.errors import first_line
    if e is None:
        return ""
    text, lines = first_line(e), [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    if text.endswith(":") and len(lines) > 1:
        text += " " + lines[1]
    return text[:300]


def _export_mode(model: Any, kwargs: dict[str, Any]) -> tuple[str, str]:
    """("non-strict" | "strict", "") when torch.export captures the model, else ("", why not)."""
    import torch
    reasons = []
    for strict in (False, True):
        try:
            with torch.no_grad():
                torch.export.export(model, (), kwargs, strict=strict)
            return ("strict" if strict else "non-strict"), ""
        except Exception as e:  # noqa: BLE001 - torch raises many unrelated types here
            reasons.append(_line(e))
    return "", reasons[0]


def run_case(case: Case) -> Record:
    """Build, export, capture, optimise on both backends and compare one model (in the worker)."""
    import numpy as np
    from transformers import CONFIG_MAPPING

    import accelir
    from accelir.accuracy import DEFAULT_BUDGETS, measure
    from accelir.errors import AccelirError

    t0 = time.perf_counter()
    record = Record(case.family, case.name, "build")
    try:
        reason = composite_reason(CONFIG_MAPPING[case.model_type]())
        if reason:
            record.status, record.reason = "composite", reason
            return record
        _stage("build")
        model, kwargs, want, record.tier = build(case)
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        record.reason = _line(e)
        return record
    _stage("torch.export")
    record.export_mode, why = _export_mode(model, kwargs)
    if not record.export_mode:
        record.status, record.reason = "export", f"torch.export fails: {why}"
        return record
    record.status = "captured"
    try:
        _stage("accelir.capture")
        graph = accelir.capture(model, (), example_kwargs=kwargs, strict=record.export_mode == "strict")
        flat = [np.asarray(x) for x in graph.meta.pop("signature").flatten(**kwargs)]
    except Exception as e:  # noqa: BLE001
        outcome = {"result": "error" if isinstance(e, AccelirError) else "raw", "stage": "capture", "reason": _line(e)}
        record.backends = {b: dict(outcome) for b in ("onnxruntime", "xla")}
        return record
    want = [x.detach().numpy() for x in want]
    budget = DEFAULT_BUDGETS["fp32"]
    for backend in ("onnxruntime", "xla"):
        try:
            _stage(f"optimize {backend}")
            got = accelir.optimize(graph, flat, backend=backend)(*flat)
            got = [np.asarray(x) for x in (got if isinstance(got, (list, tuple)) else [got])]
            errors = measure(want, got)
            broken = budget.violations(errors)
            record.backends[backend] = {"result": "mismatch" if broken else "match", "errors": str(errors),
                                        "reason": "; ".join(broken)}
        except Exception as e:  # noqa: BLE001
            record.backends[backend] = {"result": "error" if isinstance(e, AccelirError) else "raw",
                                        "stage": "optimize", "reason": _line(e)}
    record.seconds = round(time.perf_counter() - t0, 1)
    return record


def worker() -> None:
    """Read cases (JSON lines) on stdin, write one ``MARK``-prefixed record line each on stdout."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import torch
    from transformers import CONFIG_MAPPING  # noqa: F401 - imported before the first model's clock starts

    import accelir.accuracy  # noqa: F401
    torch.set_num_threads(1)
    _stage("ready")
    for line in sys.stdin:
        case = Case(**json.loads(line))
        try:
            record = run_case(case)
        except Exception as e:  # noqa: BLE001 - the worker itself must not die on one model
            record = Record(case.family, case.name, "crash", f"{type(e).__name__}: {e}"[:300])
            traceback.print_exc()
        print(MARK + json.dumps(asdict(record)), flush=True)


# ----- the sweep ---------------------------------------------------------------------------

class _Worker:
    """One worker subprocess, restarted after a timeout, a crash or ``restart_every`` models."""

    def __init__(self, log: Any, restart_every: int):
        self.log, self.restart_every, self.proc, self.served = log, restart_every, None, 0

    def _start(self) -> subprocess.Popen:
        """A worker that has imported its libraries (the model's timeout starts after that)."""
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false",
                   XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, bufsize=1)
        for line in proc.stdout:
            if line.startswith(STAGE + "ready"):
                return proc
        raise RuntimeError(f"the sweep's worker exited before it was ready (exit code {proc.wait()}); see the log")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc, self.served = None, 0

    def run(self, case: Case, timeout: float) -> Record:
        if self.proc is None or self.served >= self.restart_every:
            self.stop()
            self.proc = self._start()
        self.served += 1
        self.log.write(f"\n===== {case.name}\n")
        self.log.flush()
        t0, stage = time.perf_counter(), "start"
        self.proc.stdin.write(json.dumps(asdict(case)) + "\n")
        self.proc.stdin.flush()
        while True:
            left = timeout - (time.perf_counter() - t0)
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                return Record(case.family, case.name, "timeout", f"no result in {timeout:g} s (in {stage})",
                              seconds=round(timeout, 1))
            line = self.proc.stdout.readline()
            if not line:
                code = self.proc.poll()
                self.stop()
                return Record(case.family, case.name, "crash", f"the worker died (exit code {code})",
                              seconds=round(time.perf_counter() - t0, 1))
            if line.startswith(STAGE):
                stage = line[len(STAGE):].strip()
            if line.startswith(MARK):
                return Record(**json.loads(line[len(MARK):]))


def sweep(cases: list[Case], out_dir: str, timeout: float, restart_every: int = 20,
          previous: dict[str, Record] | None = None, verbose: bool = True, jobs: int = 1) -> dict[str, Record]:
    """Run ``cases`` on ``jobs`` workers (the JSON and the table rewritten after each model), keeping
    ``previous`` records of models not in ``cases``."""
    records = dict(previous or {})
    os.makedirs(out_dir, exist_ok=True)
    pending = list(reversed(cases))
    lock = threading.Lock()
    done = [0]

    def drain(log: Any) -> None:
        pool = _Worker(log, restart_every)
        try:
            while True:
                with lock:
                    if not pending:
                        return
                    case = pending.pop()
                record = pool.run(case, timeout)
                with lock:
                    records[case.name] = record
                    write(records, out_dir)
                    done[0] += 1
                    if verbose:
                        print(f"[{done[0]}/{len(cases)}] {case.family} {case.name}: {_short(record)}", flush=True)
        finally:
            pool.stop()

    with open(os.path.join(out_dir, "transformers_sweep.log"), "a", encoding="utf-8") as log:
        threads = [threading.Thread(target=drain, args=(log,)) for _ in range(max(1, jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return records


def _short(r: Record) -> str:
    if r.status != "captured":
        return f"{r.status} {r.reason}".strip()
    return ", ".join(f"{b} {o['result']}" + (f" ({o['reason']})" if o.get("reason") else "")
                     for b, o in r.backends.items())


# ----- the report -----------------------------------------------------------------------

COLUMNS = ("models", "composite", "not built", "torch.export fails", "captured", "match onnxruntime", "match xla",
           "accelir errors", "mismatches", "timeouts / crashes")


def summarize(records: dict[str, Record]) -> dict[str, dict[str, int]]:
    """Counts per family (and "all"): the target's denominator is "captured" (torch.export captures);
    "accelir errors" and "mismatches" count models with at least one backend in that state."""
    table: dict[str, dict[str, int]] = {}
    for r in records.values():
        for key in (r.family, "all"):
            row = table.setdefault(key, dict.fromkeys(COLUMNS, 0))
            row["models"] += 1
            row[{"composite": "composite", "build": "not built", "export": "torch.export fails",
                 "captured": "captured"}.get(r.status, "timeouts / crashes")] += 1
            results = {b: o["result"] for b, o in r.backends.items()}
            row["match onnxruntime"] += results.get("onnxruntime") == "match"
            row["match xla"] += results.get("xla") == "match"
            row["accelir errors"] += any(v in ("error", "raw") for v in results.values())
            row["mismatches"] += "mismatch" in results.values()
    return table


def markdown(records: dict[str, Record]) -> str:
    table = summarize(records)
    lines = ["| family | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for family in [f for f in ("text", "vision", "audio", "all") if f in table]:
        lines.append(f"| {family} | " + " | ".join(str(table[family][c]) for c in COLUMNS) + " |")
    failing = [r for r in records.values() if r.status in ("timeout", "crash")
               or (r.status == "captured" and any(o["result"] != "match" for o in r.backends.values()))]
    lines += ["", "Captured by torch.export but not matching eager on both backends, or stopped:", ""]
    lines += [f"- {r.family} {r.name}: {_short(r)}" for r in sorted(failing, key=lambda r: (r.family, r.name))]
    for status, title in (("export", "torch.export fails"), ("build", "not built at a small config"),
                          ("composite", "composite, skipped")):
        rows = sorted((r for r in records.values() if r.status == status), key=lambda r: (r.family, r.name))
        lines += ["", f"{title} ({len(rows)}):", ""] + [f"- {r.family} {r.name}: {r.reason}" for r in rows]
    return "\n".join(lines) + "\n"


def write(records: dict[str, Record], out_dir: str) -> None:
    import transformers
    data = {"transformers": transformers.__version__, "budget": "accelir.accuracy.DEFAULT_BUDGETS['fp32']",
            "summary": summarize(records), "models": [asdict(r) for r in records.values()]}
    with open(os.path.join(out_dir, "transformers_sweep.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out_dir, "transformers_sweep.md"), "w", encoding="utf-8") as f:
        f.write(markdown(records))


def load(out_dir: str) -> dict[str, Record]:
    path = os.path.join(out_dir, "transformers_sweep.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {r["name"]: Record(**r) for r in json.load(f)["models"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: text, vision, audio")
    parser.add_argument("--models", default="", help="comma-separated model types (config keys) to run, e.g. bert,vit")
    parser.add_argument("--heads", action="store_true", help="also each family's task heads, not only base models")
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}: a check that the sweep works")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model (default 300)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes side by side (default 1)")
    parser.add_argument("--restart-every", type=int, default=20, help="models per worker process (default 20)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the records in OUT's JSON; run only the models not there, or those --models names")
    parser.add_argument("--out", default=RESULTS, help="output directory (default benchmarks/results)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker()
        return 0
    families = tuple(f for f in args.families.split(",") if f)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    cases = enumerate_cases(families, args.heads)
    wanted = set(QUICK) if args.quick else {m for m in args.models.split(",") if m}
    if wanted:
        cases = [c for c in cases if c.model_type in wanted]
    previous = load(args.out) if args.resume else {}
    if args.resume and not wanted:
        cases = [c for c in cases if c.name not in previous]
    print(f"settings: transformers sweep of {len(cases)} models ({', '.join(families)}), batch {BATCH}, "
          f"timeout {args.timeout:.0f} s a model, budget max_rel 1e-4 against eager torch", flush=True)
    records = sweep(cases, args.out, args.timeout, args.restart_every, previous, jobs=args.jobs)
    print(markdown(records))
    print(f"wrote {args.out}/transformers_sweep.json, transformers_sweep.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
