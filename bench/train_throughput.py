"""Real tokens/s of the training loop: the baseline against the default loop, and each layer
alone, measured side by side in one run on this machine through the real `train()` path.

baseline: fp32, padded batches in random order (no bucketing), no packing, no compile,
          the plain loss through the LM head.
default:  the loop's defaults for this device (on a CPU: bucketing, and packing with
          per-document attention when padding after bucketing stays above 10%, into rows
          no longer than the longest example, and the chunked loss, which takes the
          plain path when the logits fit one chunk; bf16, token-budget micro-batches,
          widths rounded to 64 and one packed row per micro-batch are GPU defaults;
          compile is off unless asked).
+LAYER:   the baseline with that one layer switched on.

The student has realistic proportions at CPU size: 64 image tokens per image (a 16x16
patch grid, pixel shuffle 2, as SigLIP-2 at 256px/16), a chat prompt, and answer lengths
drawn from a long-tailed trace-length distribution: lognormal, median 180 tokens,
p90 ~ 470, clipped to [16, 1024] (a parametric stand-in for CoT teacher traces, which do
not ship with the repo). ``--lengths-from DATASET`` uses the trace lengths of a real
dataset version instead.

Real tokens/s = non-padding tokens / wall time of the whole step (optimizer included);
the figure of a run is its median step after the first (warm-up) step, which keeps a
neighbour's burst of CPU use on a shared machine from deciding a ratio.

    python bench/train_throughput.py            # the figures for bench/RESULTS.md
    python bench/train_throughput.py --quick    # same figures at smaller size

(--quick made one pass over its 9 configs in 2.5 minutes on the loaded 2-core box, so ~5
minutes with the default 2 passes; the full size takes several times that.)

Every config runs ``--repeats`` times (default 2), in order and then in reverse, and its
figure is the mean of its passes (each pass's figure printed beside it).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DISTILL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from distill.ingest.pipeline import IngestOptions, ingest  # noqa: E402
from distill.ingest.sources.digits import DigitsConfig, iter_digits  # noqa: E402
from distill.train.config import TrainConfig  # noqa: E402
from distill.train.loop import train  # noqa: E402
from distill.train.metrics import read_metrics  # noqa: E402
from distill.train.tokenizer import TINY_TOKENIZER_DIR, training_corpus  # noqa: E402
from testing.train_fixtures import write_dataset_version  # noqa: E402

SIZES = {
    "full": dict(image_size=64, vision_hidden=128, vision_layers=2, llm_hidden=256,
                 llm_layers=4, heads=4, inter=704, batch=32, steps=4, items=256,
                 median=180.0),
    "quick": dict(image_size=32, vision_hidden=64, vision_layers=1, llm_hidden=128,
                  llm_layers=2, heads=4, inter=352, batch=24, steps=4, items=144,
                  median=180.0),
}
BASELINE = dict(precision="fp32", bucketing=False, packing=False, compile=False, liger=False,
                num_workers=0, pin_memory=False, micro_batch_tokens=None, pad_multiple=1,
                loss_kernel="plain", attention="sdpa")
# Each layer alone on top of the baseline (name -> the fields it changes).
LAYERS = {
    "+bucketing": {"bucketing": True},
    # packed rows no longer than the micro-batch's longest example (the CPU default)
    "+packing": {"packing": True, "attention": "varlen"},  # per-document attention
    "+packing-dense": {"packing": True, "attention": "sdpa"},  # block mask over the row
    # all of a micro-batch in one row (the GPU default fills a token budget this way)
    "+packing-1row": {"packing": True, "attention": "varlen", "pack_max_tokens": 1 << 20},
    "+tokens": {"micro_batch_tokens": 4096, "pad_multiple": 64},  # budgeted micro-batches
    "+chunked-ce": {"loss_kernel": "chunked"},
    "+bf16": {"precision": "bf16"},  # bf16 weights, fp32 masters under autocast
}


def model_spec(size: dict, folder: Path) -> Path:
    spec = {
        "tokenizer": str(TINY_TOKENIZER_DIR), "image_size": size["image_size"],
        "pixel_shuffle_factor": 2, "include_system": True,
        "vision": {"model_type": "siglip2_vision_model", "hidden_size": size["vision_hidden"],
                   "intermediate_size": size["vision_hidden"] * 4,
                   "num_hidden_layers": size["vision_layers"], "num_attention_heads": 2,
                   "patch_size": 4, "num_patches": (size["image_size"] // 4) ** 2,
                   "vision_use_head": False},
        "llm": {"model_type": "qwen2", "vocab_size": "auto", "hidden_size": size["llm_hidden"],
                "intermediate_size": size["inter"], "num_hidden_layers": size["llm_layers"],
                "num_attention_heads": size["heads"], "num_key_value_heads": 2,
                "max_position_embeddings": 4096, "tie_word_embeddings": True},
    }
    path = folder / "bench-student.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def trace_lengths(n: int, median: float, seed: int, source: Path | None) -> np.ndarray:
    if source is not None:
        from transformers import AutoTokenizer

        from distill.train.data import load_training_set
        from distill.train.siqvl.student_processor import StudentProcessor  # noqa: F401

        tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
        targets = [item.target for item in load_training_set(source, "cot").items]
        lengths = np.array([len(tokenizer(t).input_ids) for t in targets])
        return np.random.default_rng(seed).choice(lengths, size=n)
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(median), 0.75, size=n), 16, 1024).astype(int)


def make_dataset(folder: Path, size: dict, lengths_from: Path | None) -> Path:
    ingest_dir = folder / "ingest"
    ingest(iter_digits(DigitsConfig(seed=0, counts={"train": size["items"]})),
           IngestOptions(out=ingest_dir))
    words = " ".join(training_corpus()).split()
    lengths = trace_lengths(size["items"], size["median"], 0, lengths_from)
    by_id: dict[str, int] = {}

    def reasoning(sample) -> str:
        index = by_id.setdefault(sample.id, len(by_id))
        rng = np.random.default_rng([1, index])
        # ~1.6 tokens per corpus word with the tiny tokenizer (digits split, spaces)
        count = max(4, int(lengths[index] / 1.6))
        return " ".join(words[i] for i in rng.integers(0, len(words), size=count))

    return write_dataset_version(ingest_dir, folder / "version", reasoning_fn=reasoning)


def measure(name: str, dataset: Path, spec: Path, size: dict, layers: dict,
            folder: Path) -> dict:
    fields = dict(stage="cot", model=str(spec), target="cot", llm="full",
                  max_steps=size["steps"] + 1, batch_size=size["batch"], lr=1e-4,
                  warmup_steps=1, log_every=1, save_every=10_000, tensorboard=False,
                  max_length=2048)
    config = TrainConfig(**{**fields, **layers})
    out = folder / f"run-{name}"
    started = time.perf_counter()
    train(config, dataset, out)
    wall = time.perf_counter() - started
    records = read_metrics(out / "metrics.jsonl")[1:]  # first step: warm-up (compile, caches)
    tokens = np.diff([r["tokens_seen"] for r in read_metrics(out / "metrics.jsonl")])
    # The median step's rate: robust to a neighbour's burst on a shared machine.
    rates = [r["tokens_per_s"] for r in records]
    padding = float(np.mean([r["padding_fraction"] for r in records]))
    assert len(tokens) == len(records)
    return {"name": name, "tokens_per_s": float(np.median(rates)), "padding": padding,
            "wall_s": wall, "peak_gb": records[-1]["memory_gb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller size (~5 minutes on 2 cores)")
    parser.add_argument("--lengths-from", type=Path, help="dataset version for trace lengths")
    parser.add_argument("--with-compile", action="store_true",
                        help="also measure torch.compile alone (adds ~1 min of compile time)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="passes over all configs, alternating order (default 2)")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # each run saves a student: its shard bars are noise
    size = SIZES["quick" if args.quick else "full"]
    runs = [("baseline", BASELINE), ("default", {})]
    runs += [(name, {**BASELINE, **fields}) for name, fields in LAYERS.items()]
    if not args.quick:
        runs.append(("+workers", {**BASELINE, "num_workers": 1}))
    if args.with_compile:
        runs.append(("+compile", {**BASELINE, "compile": True}))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = model_spec(size, folder)
        dataset = make_dataset(folder, size, args.lengths_from)
        # In order, then in reverse (A B .. B A): a neighbour's burst or a drift of the
        # machine's load falls on every config alike; a config's figure is its mean.
        passes: dict[str, list[dict]] = {name: [] for name, _ in runs}
        for repeat in range(args.repeats):
            for name, layers in (runs if repeat % 2 == 0 else runs[::-1]):
                passes[name].append(measure(f"{name}-{repeat}", dataset, spec, size, layers,
                                            folder))
    results = [{"name": name, **{key: float(np.mean([r[key] for r in runs_of]))
                                 for key in ("tokens_per_s", "padding", "peak_gb")},
                "spread": [r["tokens_per_s"] for r in runs_of]}
               for name, runs_of in passes.items()]
    base = results[0]["tokens_per_s"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"size: {'quick' if args.quick else 'full'} (LLM {size['llm_hidden']}x"
          f"{size['llm_layers']}, {(size['image_size'] // 8) ** 2} image tokens, batch "
          f"{size['batch']}, {size['steps']} timed steps)")
    print(f"{'run':<15}{'real tok/s':>12}{'vs baseline':>13}{'padding':>10}{'peak GB':>9}"
          f"  passes")
    for r in results:
        spread = " / ".join(f"{x:,.0f}" for x in r["spread"])
        print(f"{r['name']:<15}{r['tokens_per_s']:>12,.0f}{r['tokens_per_s'] / base:>12.2f}x"
              f"{r['padding']:>10.1%}{r['peak_gb']:>9.2f}  {spread}")
    print("liger: not measured (Triton kernels, GPU only)")
    print("+chunked-ce: the tiny tokenizer's logits fit one chunk, so it runs the plain loss "
          "here (its ratio is noise; tests/test_train_loss.py checks the chunked kernel)")
    print(f"ratio: {results[1]['tokens_per_s'] / base:.2f}")


if __name__ == "__main__":
    main()
