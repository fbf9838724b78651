"""Generation for evaluation: batched greedy decoding with the student's own prompt format.

Eval needs no knowledge of SiQ-VL's internals::

    model, processor = load_student("RUN/final")
    outputs = generate_answers(model, processor, samples, image_root, mode="cot")
    # -> [(text, n_generated_tokens), ...] in the order of ``samples``

The prompt is built by the same ``StudentProcessor.prompt_ids`` used in training; rows are
left-padded so that every row's next token sits at the end, and decoding keeps a KV cache.
Answer extraction is the eval stage's job (``distill.core.answers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from distill.core.images import load_image
from distill.schemas import Sample
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration
from distill.train.siqvl.student_processor import PromptMode, StudentProcessor


@torch.no_grad()
def generate_answers(model: SiQVLForConditionalGeneration, processor: StudentProcessor,
                     samples: Sequence[Sample], image_root: str | Path | None,
                     mode: PromptMode = "cot", max_new_tokens: int = 256,
                     batch_size: int = 16) -> list[tuple[str, int]]:
    """Greedy answers for ``samples`` (images resolved under ``image_root``).

    Returns ``(text, n_tokens)`` per sample: the decoded text without special tokens, and
    the number of generated tokens (EOS included when it was produced).
    """
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.language_model.parameters()).dtype
    results: list[tuple[str, int]] = []
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].question))
    by_index: dict[int, tuple[str, int]] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch_samples = [samples[i] for i in chunk]
        images = [load_image(s.image, image_root) for s in batch_samples]
        batch = processor.generation_batch(batch_samples, images, mode)
        prompt = batch["input_ids"]
        new_tokens = model.generate(
            input_ids=prompt.to(device),
            pixel_values=batch["pixel_values"].to(device, dtype),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=processor.eos_token_id, pad_token_id=processor.pad_token_id,
        ).cpu()[:, prompt.shape[1]:]
        for row, index in enumerate(chunk):
            by_index[index] = decode_row(new_tokens[row].tolist(), processor)
    results = [by_index[i] for i in range(len(samples))]
    return results


def decode_row(tokens: list[int], processor: StudentProcessor) -> tuple[str, int]:
    """Cut at the first EOS (later positions are padding), decode without special tokens."""
    eos = processor.eos_token_id
    n = tokens.index(eos) + 1 if eos in tokens else len(tokens)
    text = processor.tokenizer.decode(tokens[:n], skip_special_tokens=True)
    return text.strip(), n
