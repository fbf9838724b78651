"""A tiny real image-text-to-text model (LLaVA: CLIP vision tower + Qwen2 LLM), built from
configs with a small BPE tokenizer trained here and saved to a local folder.

Beside ``tiny_vlm.py`` (Idefics3, loadable by vLLM too) because the eval tests need what
that one does not give: outputs that *depend on the input* (weights drawn wide, so a
padding bug changes the text instead of every prompt giving the same newlines) and speed
(a 320-token vocabulary instead of Qwen's 151k). transformers only."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "What is the sum of the digits in the image? Answer with a number.",
    "Is the sum of the digits in the image an even number? Answer yes or no.",
    "How many of the digits in the image are even? The largest digit minus the smallest.",
    "Think step by step, then give the final answer on a last line as Answer: 12",
    "The digits are 3, 5 and 8. 3 + 5 + 8 = 16. Answer: 16. yes no 0 1 2 4 6 7 9",
]


def build_tiny_llava(folder: Path, *, seed: int = 0) -> Path:
    """Save a ~100k-parameter LLaVA (random weights) and its processor into ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
        Qwen2Config,
    )
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<pad>", "<|end|>", "<image>", "<|system|>", "<|user|>",
                "<|assistant|>"]
    tokenizer.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>",
                                   pad_token="<pad>", eos_token="<|end|>",
                                   extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=fast, patch_size=8,
                               vision_feature_select_strategy="default",
                               chat_template=CHAT_TEMPLATE, num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8)
    text = Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       max_position_embeddings=512, eos_token_id=fast.eos_token_id,
                       pad_token_id=fast.pad_token_id, initializer_range=0.5)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=fast.convert_tokens_to_ids("<image>"),
                         image_seq_length=16)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
