"""GPU throughput of the training loop at real shapes (random weights): Qwen2.5-0.5B +
SigLIP-2-base in stage 1 (projector only) and stage 2 (LLM fully trained), and Qwen2.5-1.5B
in stage 1; the seed's baseline against the default loop, then the default loop with one
layer changed at a time. Real tokens/s, MFU, peak memory, speed-ups: all in one run.

Method. Each section (a model, a stage, its configs) prepares every config through the
loop's own ``prepare_run`` (the student loaded from one saved copy, the data encoded
once), runs one untimed pass over the timed steps for each (CUDA/cuBLAS setup for every
shape those steps meet; compiling, when asked), then times each config twice in
alternating order (A B ... B A). A pass's rate is its real (non-padding) tokens over the
wall time of its steps after the first (the first waits for the loader to start).

MFU = model FLOPs of the pass / its time / the card's dense bf16 peak. Model FLOPs count
what training needs, not what a kernel happens to do: linear layers 2 FLOPs per weight and
token forward, backward x1 more for the activation gradients (every stage: the projector
sits below the LLM) and x1 more for the weight gradients where the LLM trains; causal
attention 2 n^2 d per layer forward and twice that backward; the LM head on label tokens
only; the frozen vision tower forward only.

Reference (the seed, one RTX PRO 6000 Blackwell, 0.5B): 100,923 real tokens/s in stage 1
and 86,080 in stage 2.

    bash bench/gpu_throughput.sh                # on a GPU; ~8 minutes, results in $OUT
    bash bench/gpu_throughput.sh --dry-run      # tiny shapes on a CPU: every code path
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("DISTILL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from gpu_flops import PEAK_BF16_TFLOPS, pass_flops, peak_tflops  # noqa: E402
from train_throughput import BASELINE, make_dataset  # noqa: E402

from distill.core.paths import DATA_DIR  # noqa: E402
from distill.train.checkpoint import TrainerState  # noqa: E402
from distill.train.config import TrainConfig  # noqa: E402
from distill.train.data import load_training_set  # noqa: E402
from distill.train.loop import encode_dataset, plan_steps, prepare_run, run_steps  # noqa: E402
from distill.train.metrics import MetricsLog, read_metrics  # noqa: E402
from distill.train.runtime import setup_runtime  # noqa: E402
from distill.train.siqvl.build import build_student, load_model_spec, save_student  # noqa: E402
from distill.train.siqvl.student_processor import StudentProcessor  # noqa: E402

SPECS = {"0.5b": "qwen2.5-0.5b-siglip2-base-random", "1.5b": "qwen2.5-1.5b-siglip2-base-random"}
REFERENCE = {"0.5b-stage1": 100_923, "0.5b-stage2": 86_080}
STAGES = {"stage1": dict(stage="align", llm="frozen"), "stage2": dict(stage="vqa", llm="full")}
# The seed's baseline loop: fp32, padded micro-batches of 8 examples (16 ran an H100 out of
# memory in fp32) in random order, no packing, the plain loss.
SIZES = {
    # 64 examples a step (~21k real tokens: 64 image tokens, a chat prompt, answers with a
    # median of 180 tokens and a long tail), 6 timed steps a pass.
    "gpu": dict(batch=64, micro=8, steps=6, items=768, median=180.0),
    "dry-run": dict(batch=6, micro=2, steps=3, items=48, median=40.0),
}
# On the CPU dry run, the GPU defaults are forced so that their code paths run.
DRY_RUN_DEFAULT = dict(precision="bf16", micro_batch_tokens=512, pad_multiple=64,
                       packing=True, attention="varlen", num_workers=1, pin_memory=False)


@dataclass
class Section:
    """One model and stage, and the configs timed side by side (the first is the
    reference of the section's speed-ups)."""

    name: str
    spec: str
    stage: str
    configs: dict[str, dict]
    reference: str = "baseline"
    results: list[dict] = field(default_factory=list)


def sections(args, liger: bool, size: dict) -> list[Section]:
    default = dict(DRY_RUN_DEFAULT) if args.dry_run else {}
    seed_baseline = {**BASELINE, "micro_batch_size": size["micro"]}
    out = [Section(f"{spec}-{stage}", spec, stage,
                   {"baseline": seed_baseline, "default": default})
           for spec, stage in (("0.5b", "stage1"), ("0.5b", "stage2"), ("1.5b", "stage1"))]
    # The default loop with one layer changed (speed-ups relative to the default). The loss
    # kernel: auto picks Liger's fused CE in stage 1 when installed, the chunked torch
    # kernel otherwise; each stage also times the others it can run.
    stage1 = {"default": default,
              "no-packing": {**default, "packing": False},
              "attention-sdpa": {**default, "attention": "sdpa"},
              "ce-plain": {**default, "loss_kernel": "plain"},
              "pad-1": {**default, "pad_multiple": 1},
              "tokens-32k": {**default, "micro_batch_tokens": 32768}}
    stage2 = {"default": default,
              "ce-plain": {**default, "loss_kernel": "plain"},
              "bf16-no-master": {**default, "master_weights": "bf16"},
              "no-packing": {**default, "packing": False}}
    if liger:
        stage1["ce-chunked"] = {**default, "loss_kernel": "chunked"}
        stage1["no-liger-kernels"] = {**default, "liger": False}
        stage2["ce-liger"] = {**default, "loss_kernel": "liger"}
    out += [Section("0.5b-stage1-layers", "0.5b", "stage1", stage1, "default"),
            Section("0.5b-stage2-layers", "0.5b", "stage2", stage2, "default")]
    if not args.dry_run:  # FlexAttention: no backward pass on a CPU. It compiles, and the
        # H200's stage-1 layers section holding it did not end in the ~300 s it had left, so
        # it stands alone, after the sections it would hold up.
        out.append(Section("0.5b-stage1-flex", "0.5b", "stage1",
                           {"default": default, "attention-flex": {**default,
                                                                   "attention": "flex"}},
                           "default"))
    if args.compile:
        out.append(Section("0.5b-stage1-compile", "0.5b", "stage1",
                           {"default": default, "compiled": {**default, "compile": True}},
                           "default"))
    return out


# -- preparing ------------------------------------------------------------------------------
CARRIED_DIGITS = Path(__file__).resolve().parent / "wheels" / "digits.npz"


def use_carried_digits() -> None:
    """The digits scans without scikit-learn: a GPU image may lack it (with scipy it is too
    big to carry), so ``gpu_wheels.sh`` saves the same 1,797 scans next to the wheels and
    the two readers of ``load_scans`` get them from there."""
    try:
        import sklearn.datasets  # noqa: F401
        return
    except ImportError:
        pass
    if not CARRIED_DIGITS.is_file():
        raise SystemExit(f"scikit-learn is not installed and {CARRIED_DIGITS} was not "
                         f"carried: run bash bench/gpu_wheels.sh and carry bench/wheels")
    import distill.core.digits as core_digits
    import distill.ingest.sources.digits as digits_source

    with np.load(CARRIED_DIGITS) as saved:
        scans = (saved["images"].astype(np.float32), saved["target"].astype(np.int64))
    core_digits.load_scans = digits_source.load_scans = lambda: scans
    print(f"digits: scikit-learn missing; read the carried scans ({CARRIED_DIGITS.name})")


def spec_file(name: str, folder: Path, dry_run: bool) -> Path:
    """The real spec, or (dry run) the same structure with every size cut down."""
    path = DATA_DIR / "models" / f"{SPECS[name]}.yaml"
    if not dry_run:
        return path
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec.pop("description", None)
    spec["tokenizer"] = str(DATA_DIR / "models" / "tiny-tokenizer")
    spec["image_size"] = 32
    spec["vision"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, patch_size=4, num_patches=64)
    wide = 64 if name == "0.5b" else 96
    spec["llm"].update(hidden_size=wide, intermediate_size=2 * wide, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=2048)
    out = folder / f"dry-run-{name}.yaml"
    out.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return out


def saved_student(name: str, folder: Path, dry_run: bool, device: torch.device) -> Path:
    """Build the random student once (on the device: fast init) and save it in bf16; every
    config loads it in its own precision."""
    out = folder / f"student-{name}"
    spec = load_model_spec(spec_file(name, folder, dry_run))
    with torch.device(device):
        model, processor = build_student(spec, dtype=torch.bfloat16)
    save_student(model, processor, out)
    del model
    return out


@dataclass
class Prepared:
    name: str
    context: object
    parts: object
    key: str
    flops: float  # model FLOPs of one pass (its own plan: the baseline does not bucket)


def prepare(section: Section, name: str, fields: dict, env: dict) -> Prepared:
    config = TrainConfig(**{
        "stage": "cot", "target": "cot", "max_steps": env["size"]["steps"],
        "batch_size": env["size"]["batch"], "lr": 1e-5, "warmup_steps": 1, "log_every": 1,
        "save_every": 10**6, "tensorboard": False, "max_length": 2048,
        **STAGES[section.stage], **fields})
    runtime = setup_runtime(config)
    out = env["folder"] / "runs" / section.name / name
    student = env["students"][section.spec]
    context, parts, state, _ = prepare_run(config, env["data"], out, runtime, False,
                                           str(student), env["encoded"])
    plans = plan_steps(parts.dataset, config, runtime, context.layers.split, 0,
                       context.total_steps)
    examples = [i for plan in plans for micro in plan.micro for i in micro]
    flops = pass_flops(student, parts.dataset.lengths[examples],
                       parts.dataset.label_counts[examples],
                       llm_trained=section.stage == "stage2")
    return Prepared(name, context, parts, state.outcome_hash, flops)


# -- timing ---------------------------------------------------------------------------------
def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def own_bytes(prepared: Prepared) -> int:
    """Weights and optimizer state of one config (what it holds between passes)."""
    tensors = list(prepared.parts.model.parameters())
    for state in prepared.parts.optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def one_pass(prepared: Prepared, tag: str, env: dict) -> dict:
    ctx, parts = prepared.context, prepared.parts
    path = ctx.out / f"metrics-{tag}.jsonl"
    metrics = MetricsLog(path, enabled=True, tensorboard=False, resume_step=None)
    sync()
    cuda = torch.cuda.is_available()
    held = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run_steps(ctx, parts, TrainerState(0, 0, 0, 0, 0, prepared.key), metrics)
    sync()
    wall = time.perf_counter() - started
    metrics.close()
    records = read_metrics(path)
    tokens = np.diff([0] + [r["tokens_seen"] for r in records])
    seconds = tokens / np.array([r["tokens_per_s"] for r in records])
    steady = slice(1, None) if len(records) > 1 else slice(None)
    rate = float(tokens[steady].sum() / seconds[steady].sum())
    flops = prepared.flops
    peak = (torch.cuda.max_memory_allocated() - held + own_bytes(prepared)) / 2**30 \
        if cuda else records[-1]["memory_gb"]
    return {"tokens_per_s": rate, "wall_s": wall, "step_s": float(seconds[steady].mean()),
            "padding": float(np.mean([r["padding_fraction"] for r in records])),
            "peak_gb": float(peak), "flops_per_token": flops / int(tokens.sum()),
            "mfu": flops / int(tokens.sum()) * rate / (env["peak_tflops"] * 1e12)}


def failed(section: Section, name: str, exc: Exception, prepared: dict) -> None:
    """Record a config's error (the traceback goes to the log) and free what it held."""
    traceback.print_exc()
    section.results.append({"config": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
    prepared.pop(name, None)
    free()


def run_section(section: Section, env: dict) -> None:
    prepared: dict[str, Prepared] = {}
    warm: dict[str, dict] = {}
    for name, fields in section.configs.items():
        if time.perf_counter() > env["deadline"]:
            section.results.append({"config": name, "error": "skipped: time budget"})
            continue
        while True:
            try:
                prepared[name] = prepare(section, name, fields, env)
                warm[name] = one_pass(prepared[name], "warm-up", env)
                print(f"  {name}: warmed up in {warm[name]['wall_s']:.0f} s", flush=True)
                break
            except torch.cuda.OutOfMemoryError as exc:
                prepared.pop(name, None)
                free()
                micro = fields.get("micro_batch_size")
                if not micro or micro == 1:
                    section.results.append({"config": name, "error": f"out of memory: {exc}"[:300]})
                    break
                # the fp32 baseline at a larger model: fewer examples a forward pass
                fields = section.configs[name] = {**fields, "micro_batch_size": micro // 2}
                print(f"{section.name} {name}: out of memory at micro-batch {micro}, "
                      f"retrying at {micro // 2}", flush=True)
            except Exception as exc:  # one GPU call: a config that fails must not end it
                failed(section, name, exc, prepared)
                break
    order = list(prepared)
    timed: dict[str, list[dict]] = {name: [] for name in order}
    for round_names in (order, order[::-1]):
        for name in round_names:
            if name not in prepared:
                continue
            try:
                timed[name].append(one_pass(prepared[name], f"timed-{len(timed[name])}", env))
            except Exception as exc:
                failed(section, name, exc, prepared)
    order = [name for name in order if name in prepared]
    for name in order:
        runs = timed[name]
        result = {"config": name, "fields": section.configs[name],
                  "layers": layer_summary(prepared[name]),
                  "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in runs])),
                  "repeats": [round(r["tokens_per_s"]) for r in runs],
                  "warm_up_s": warm[name]["wall_s"], "pass_s": runs[0]["wall_s"],
                  "step_s": float(np.mean([r["step_s"] for r in runs])),
                  **{k: runs[-1][k] for k in ("padding", "flops_per_token")},
                  "mfu": float(np.mean([r["mfu"] for r in runs])),
                  "peak_gb": max(r["peak_gb"] for r in runs)}
        section.results.append(result)
    reference = next((r for r in section.results if r["config"] == section.reference
                      and "error" not in r), None)
    for r in section.results:
        if reference and "error" not in r:
            r["speedup"] = r["tokens_per_s"] / reference["tokens_per_s"]
    payback(section)
    prepared.clear()
    free()


def payback(section: Section) -> None:
    """For compile: the warm-up's extra time over a timed pass is the compile cost; it pays
    back after cost / (seconds saved per step) steps."""
    by_name = {r["config"]: r for r in section.results if "error" not in r}
    if {"default", "compiled"} <= by_name.keys():
        eager, compiled = by_name["default"], by_name["compiled"]
        cost = compiled["warm_up_s"] - compiled["pass_s"]
        saved = eager["step_s"] - compiled["step_s"]
        compiled["compile_s"] = cost
        compiled["payback_steps"] = cost / saved if saved > 0 else None


def layer_summary(prepared: Prepared) -> dict:
    layers = prepared.context.layers
    return {"bf16": layers.bf16, "packing": layers.packing, "attention": layers.attention,
            "loss_kernel": layers.loss_kernel, "liger": layers.liger,
            "micro_batch_tokens": layers.split.tokens, "micro_batch_size": layers.split.size,
            "pad_multiple": layers.split.multiple, "autocast": layers.autocast,
            "compile": layers.compile, "workers": layers.num_workers}


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- reporting ------------------------------------------------------------------------------
def print_section(section: Section, peak: float) -> None:
    print(f"\n## {section.name} (speed-up vs {section.reference}; peak {peak:.0f} TFLOPS)",
          flush=True)
    print(f"{'config':<17}{'real tok/s':>11}{'repeats':>17}{'speed-up':>9}{'MFU':>7}"
          f"{'padding':>8}{'peak GB':>8}{'warm-up s':>10}")
    for r in section.results:
        if "error" in r:
            print(f"{r['config']:<17} {r['error']}")
            continue
        repeats = "/".join(f"{x / 1000:.1f}k" for x in r["repeats"])
        print(f"{r['config']:<17}{r['tokens_per_s']:>11,.0f}{repeats:>17}"
              f"{r.get('speedup', float('nan')):>8.2f}x{r['mfu']:>7.1%}{r['padding']:>8.1%}"
              f"{r['peak_gb']:>8.1f}{r['warm_up_s']:>10.0f}")
        if "payback_steps" in r:
            print(f"  compile: ~{r['compile_s']:.0f} s, pays back after "
                  f"{r['payback_steps'] or float('inf'):,.0f} steps")
    reference = REFERENCE.get(section.name)
    default = next((r for r in section.results if r["config"] == "default"
                    and "error" not in r), None)
    if reference and default:
        print(f"default / the seed's RTX PRO 6000 figure ({reference:,}): "
              f"{default['tokens_per_s'] / reference:.2f}x (another card)")


def environment(args) -> dict:
    import transformers

    try:
        from importlib.metadata import version

        import liger_kernel  # noqa: F401

        liger = version("liger-kernel")
    except ImportError:
        liger = None
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})",
            "dry_run": args.dry_run, "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "liger_kernel": liger}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes; runs on a CPU")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/gpu_out")))
    parser.add_argument("--budget-s", type=float, default=float("inf"),
                        help="start no new section after this many seconds")
    parser.add_argument("--peak-tflops", type=float, help=f"override the card's dense bf16 "
                        f"peak (known: {', '.join(PEAK_BF16_TFLOPS)})")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the default loop (minutes)")
    parser.add_argument("--only", help="comma-separated section names")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no GPU visible; use --dry-run to check the script on a CPU")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    info = environment(args)
    peak = args.peak_tflops or peak_tflops(info["device"], args.dry_run)
    info["peak_bf16_tflops"] = peak
    print(json.dumps(info), flush=True)
    liger = info["liger_kernel"] is not None and torch.cuda.is_available()  # Triton: GPU only
    size = SIZES["dry-run" if args.dry_run else "gpu"]
    todo = [s for s in sections(args, liger, size)
            if not args.only or s.name in args.only.split(",")]
    summary = {**info, "sections": [], "skipped": []}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_carried_digits()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_dataset(folder, {**size, "image_size": 256}, None)
        students = {name: saved_student(name, folder, args.dry_run, device)
                    for name in sorted({s.spec for s in todo})}
        processor = StudentProcessor.from_pretrained(students["0.5b"])
        base = TrainConfig(stage="cot", target="cot", max_length=2048)
        encoded = encode_dataset(load_training_set(data, "cot", "train"), processor, base)
        # No new section, nor a config's warm-up, starts after the budget: the timed passes
        # of what is warm are short, and a section's results are only written when it ends.
        env = {"size": size, "folder": folder, "data": data, "students": students,
               "encoded": encoded, "peak_tflops": peak, "deadline": started + args.budget_s}
        print(f"prepared in {time.perf_counter() - started:.0f} s", flush=True)
        for section in todo:
            if time.perf_counter() - started > args.budget_s:
                summary["skipped"].append(section.name)
                print(f"\n## {section.name}: skipped (time budget)", flush=True)
                continue
            t0 = time.perf_counter()
            try:
                run_section(section, env)
            except Exception as exc:  # keep the other sections of the one GPU call
                failed(section, "section", exc, {})
            print_section(section, peak)
            print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
            summary["sections"].append({"name": section.name, "spec": SPECS[section.spec],
                                        "stage": section.stage, "reference": section.reference,
                                        "results": section.results})
            summary["seconds"] = time.perf_counter() - started
            write_json(args.out / "gpu_results.json", summary)
    print(f"\nwritten: {args.out / 'gpu_results.json'} in {summary['seconds']:.0f} s")


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    main()
