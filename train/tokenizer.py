"""A tiny byte-level BPE tokenizer, trained locally and deterministically, for tiny students.

It behaves like Qwen2's where it matters to this toolkit: byte-level (any text encodes,
nothing is ever unknown), every digit is its own token, ChatML special tokens
(``<|im_start|>``, ``<|im_end|>``) and Qwen's vision tokens (``<|vision_start|>``,
``<|image_pad|>``, ``<|vision_end|>``), and a ChatML chat template. So the processor builds
prompts the same way for the tiny tokenizer and for a real Qwen2.5 tokenizer.

The corpus is the shipped prompt templates rendered for every digits question, plus
arithmetic rationales in the style of the built-in teachers. The shipped files in
``data/models/tiny-tokenizer`` are the output of ``python -m distill.train.tokenizer``; a test
rebuilds them and checks they are identical.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from distill.core.paths import DATA_DIR
from distill.core.prompts import load_prompt, shipped_prompts
from distill.schemas import ImageRef, Sample

TINY_TOKENIZER_DIR = DATA_DIR / "models" / "tiny-tokenizer"
VOCAB_SIZE = 1024
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD]

# ChatML, as Qwen2 uses it (without Qwen's default system prompt).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _prompt_texts() -> list[str]:
    """Every shipped teacher prompt rendered for every question kind the digits data asks
    (the judge's rubrics are no prompts a student sees)."""
    from distill.core.digits import QUESTIONS

    texts = []
    dummy = ImageRef(path="x.png", sha256="0" * 64)
    for path in shipped_prompts("teacher"):
        template = load_prompt(path)
        texts.append(template.system)
        for category, (question, answer_type) in QUESTIONS.items():
            answer = "yes" if answer_type == "yes_no" else "1"
            sample = Sample(id="t", image=dummy, question=question, answer=answer,
                            answer_type=answer_type, category=category, source="corpus")
            texts.extend(template.render(sample))
        choice = Sample(id="t", image=dummy, question="Which option is right?",
                        choices=["red", "blue", "green"], answer="A", answer_type="choice",
                        category="c", source="corpus")
        texts.extend(template.render(choice))
    return texts


def _rationales() -> list[str]:
    """Arithmetic reasoning over 2-4 digits in the phrasings a reasoning teacher uses."""
    texts = []
    positions = ["top-left", "top-right", "bottom-left", "bottom-right"]
    for digits in itertools.islice(itertools.product(range(10), repeat=3), 0, 1000, 7):
        listed = ", ".join(str(d) for d in digits[:-1]) + f" and {digits[-1]}"
        total = sum(digits)
        partial = digits[0]
        steps = []
        for d in digits[1:]:
            steps.append(f"{partial} + {d} = {partial + d}")
            partial += d
        evens = [d for d in digits if d % 2 == 0]
        cells = ", ".join(f"{p}: {d}" for p, d in zip(positions, digits, strict=False))
        texts.append(
            f"The image shows the digits {listed}. Reading each cell: {cells}. "
            f"Adding them: {'; '.join(steps)}. The sum is {total}.\nAnswer: {total}"
        )
        texts.append(
            f"The digits are {listed}. The largest digit is {max(digits)} and the smallest "
            f"digit is {min(digits)}, so {max(digits)} - {min(digits)} = "
            f"{max(digits) - min(digits)}.\nAnswer: {max(digits) - min(digits)}"
        )
        texts.append(
            f"I see {len(digits)} digits: {listed}. The even ones are "
            f"{', '.join(map(str, evens)) or 'none'}, so {len(evens)} of them are even. "
            f"Their sum is {total}, which is {'even' if total % 2 == 0 else 'odd'}.\n"
            f"Answer: {'yes' if total % 2 == 0 else 'no'}"
        )
    texts.append("Step 1: identify the numbers. Step 2: compute the result. Therefore the "
                 "final answer is the number found above. First, next, then, finally.")
    return texts


def training_corpus() -> list[str]:
    return _prompt_texts() + _rationales()


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on the fixed corpus (deterministic: same corpus, same merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        # Digits one by one, as Qwen2 does: arithmetic works digit by digit.
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=IM_END, pad_token=PAD,
        additional_special_tokens=[IM_START, VISION_START, VISION_END, IMAGE_PAD],
        chat_template=CHAT_TEMPLATE, model_max_length=4096, clean_up_tokenization_spaces=False,
    )


def save_tiny_tokenizer(out: Path = TINY_TOKENIZER_DIR) -> Path:
    tokenizer = build_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(save_tiny_tokenizer())
