"""The reasoning and answer delimiters and special tokens of the model families users run,
in one table, each entry citing the file that defines it.

Why a table: a judge that knows only ``<think>`` reads Kimi-VL's reasoning as its answer,
takes GLM-4.1V's boxed answer for plain text, and stumbles over the end-of-turn tokens a
``skip_special_tokens=False`` run keeps. ``canonical_delimiters`` rewrites every family's
spelling to the one spelling the extractor reads (``<think>``/``</think>`` around
reasoning, ``\\boxed{..}`` around a marked answer) and drops the tokens that carry no
text, so the extractor stays family-agnostic and a new family is one row here.

The entries were taken from (read, not copied): vLLM's reasoning parsers
(``vllm/reasoning/*.py`` of vllm-project/vllm) and the families' chat templates and model
cards on the Hugging Face Hub.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delimiter:
    """One spelling and what it becomes. ``kind``: ``think_open`` / ``think_close``
    (reasoning segment), ``box_open`` / ``box_close`` (a marked final answer),
    ``turn_end`` (the reply ends here: what follows is another turn, never the answer),
    ``drop`` (a token with no text)."""

    token: str
    kind: str
    families: str
    source: str


_QWEN3 = "vllm/reasoning/qwen3_reasoning_parser.py; Qwen/Qwen3-VL-8B-Thinking chat_template.jinja"
_R1 = "vllm/reasoning/deepseek_r1_reasoning_parser.py; deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
_GLM = ("zai-org/GLM-4.1V-9B-Thinking chat_template.jinja and README; "
        "vllm/reasoning/glm4_moe_reasoning_parser.py")
_KIMI = "moonshotai/Kimi-VL-A3B-Thinking-2506 chat_template.jinja / model card"
_HARMONY = ("vllm/reasoning/gptoss_reasoning_parser.py; openai/harmony docs "
            "(format.md: channels analysis / commentary / final)")
_S1 = ("s1: Simple test-time scaling (arXiv 2501.19393) sec. 3: thinking enclosed by "
       "<|im_start|>think and <|im_start|>answer; simplescaling/s1's lm-evaluation-harness "
       "task utils split replies at '<|im_start|>answer\\n'")

DELIMITERS: tuple[Delimiter, ...] = (
    # Reasoning segments.
    Delimiter("<think>", "think_open", "Qwen3(-VL), QwQ/QVQ, DeepSeek-R1 and distills, MiMo-VL, "
              "InternVL3.5, GLM-4.1V, Skywork-R1V, ERNIE-4.5, MiniMax", _QWEN3 + "; " + _R1),
    Delimiter("</think>", "think_close", "as <think>", _QWEN3 + "; " + _R1),
    Delimiter("◁think▷", "think_open", "Kimi-VL-Thinking", _KIMI),
    Delimiter("◁/think▷", "think_close", "Kimi-VL-Thinking", _KIMI),
    Delimiter("[THINK]", "think_open", "Magistral, Mistral reasoning models",
              "vllm/reasoning/mistral_reasoning_parser.py"),
    Delimiter("[/THINK]", "think_close", "Magistral", "vllm/reasoning/mistral_reasoning_parser.py"),
    Delimiter("<seed:think>", "think_open", "Seed-OSS",
              "vllm/reasoning/seedoss_reasoning_parser.py"),
    Delimiter("</seed:think>", "think_close", "Seed-OSS",
              "vllm/reasoning/seedoss_reasoning_parser.py"),
    # s1 (budget forcing): Qwen's turn token doubles as the stage delimiter.
    Delimiter("<|im_start|>think", "think_open", "s1 / s1.1 (Qwen2.5-32B fine-tunes)", _S1),
    Delimiter("<|im_start|>answer", "think_close", "s1 / s1.1", _S1),
    # gpt-oss (harmony): reasoning in the analysis channel, the reply in the final one.
    Delimiter("<|channel|>analysis<|message|>", "think_open", "gpt-oss", _HARMONY),
    Delimiter("<|channel|>commentary<|message|>", "think_open", "gpt-oss", _HARMONY),
    Delimiter("<|start|>assistant<|channel|>final<|message|>", "think_close", "gpt-oss",
              _HARMONY),
    Delimiter("<|channel|>final<|message|>", "think_close", "gpt-oss", _HARMONY),
    # Marked answers.
    Delimiter("<|begin_of_box|>", "box_open", "GLM-4.1V-Thinking, GLM-4.5V", _GLM),
    Delimiter("<|end_of_box|>", "box_close", "GLM-4.1V-Thinking, GLM-4.5V", _GLM),
    Delimiter("<response>", "drop", "ERNIE-4.5", "vllm/reasoning/ernie45_reasoning_parser.py"),
    Delimiter("</response>", "drop", "ERNIE-4.5", "vllm/reasoning/ernie45_reasoning_parser.py"),
    # Ends of a turn, kept with skip_special_tokens=False.
    Delimiter("<|im_end|>", "turn_end", "Qwen2/2.5/3(-VL), InternVL, MiMo, Kimi-VL, LLaVA-OV "
              "(Qwen2 LLM), MiniCPM-V", "Qwen/Qwen2.5-VL-7B-Instruct chat_template.json"),
    Delimiter("<|endoftext|>", "turn_end", "Qwen, GLM, Phi", "Qwen/Qwen2.5-VL-7B-Instruct "
              "tokenizer_config.json; microsoft/Phi-4-multimodal-instruct"),
    Delimiter("<|eot_id|>", "turn_end", "Llama-3.x / Llama-3.2-Vision",
              "meta-llama/Llama-3.2-11B-Vision-Instruct chat_template.json"),
    Delimiter("<|eom_id|>", "turn_end", "Llama-3.x", "meta-llama/Llama-3.2-11B-Vision-Instruct "
              "chat_template.json"),
    Delimiter("<|end_of_text|>", "turn_end", "Llama-3.x", "meta-llama/Llama-3.2-11B-Vision-"
              "Instruct tokenizer_config.json"),
    Delimiter("<|return|>", "turn_end", "gpt-oss", _HARMONY),
    Delimiter("<|end|>", "turn_end", "Phi-3/4(-multimodal), gpt-oss (message end)",
              "microsoft/Phi-4-multimodal-instruct chat_template; " + _HARMONY),
    Delimiter("<end_of_turn>", "turn_end", "Gemma 2/3", "google/gemma-3-4b-it chat_template"),
    Delimiter("<eos>", "turn_end", "Gemma", "google/gemma-3-4b-it tokenizer_config.json"),
    Delimiter("<|user|>", "turn_end", "GLM-4 / GLM-4.1V", _GLM),
    Delimiter("<|observation|>", "turn_end", "GLM-4", _GLM),
    Delimiter("<｜end▁of▁sentence｜>", "turn_end", "DeepSeek-R1 / distills, DeepSeek-VL2", _R1),
    Delimiter("<|im_start|>", "turn_end", "Qwen-style templates (a next turn began)",
              "Qwen/Qwen2.5-VL-7B-Instruct chat_template.json"),
    Delimiter("</s>", "turn_end", "LLaVA-1.5/1.6 (Vicuna, Mistral), Mistral",
              "llava-hf/llava-v1.6-mistral-7b-hf chat_template"),
    Delimiter("[/INST]", "turn_end", "Mistral/LLaVA-1.6-Mistral (a next turn began)",
              "llava-hf/llava-v1.6-mistral-7b-hf chat_template"),
    # Tokens with no text of their own.
    Delimiter("<|start|>assistant", "drop", "gpt-oss", _HARMONY),
    Delimiter("<|assistant|>", "drop", "GLM-4, Phi", _GLM),
    Delimiter("<|im_sep|>", "drop", "Phi-4", "microsoft/phi-4 chat_template"),
    Delimiter("<｜Assistant｜>", "drop", "DeepSeek-R1", _R1),
)

_REPLACEMENT = {"think_open": "<think>", "think_close": "</think>", "box_open": "\\boxed{",
                "box_close": "}", "drop": ""}
# Longest first, so '<|start|>assistant<|channel|>final<|message|>' wins over its parts;
# the extractor's own spellings ('<think>') need no rewriting.
_ORDERED = tuple(d for d in sorted(DELIMITERS, key=lambda d: -len(d.token))
                 if d.token != _REPLACEMENT.get(d.kind))
# What to look for before any rewriting: the '<|' / '<｜' every special token of that
# style starts with, else the whole token (a handful of C-speed substring searches).
_MARKS = tuple(sorted({d.token[:2] if d.token[:2] in ("<|", "<｜") else d.token
                       for d in _ORDERED}))


def canonical_delimiters(text: str) -> str:
    """``text`` with every family's delimiters in the extractor's spelling: reasoning
    between ``<think>`` and ``</think>``, a boxed answer as ``\\boxed{..}``, the reply cut at
    the first end of turn after its content, tokens without text dropped.

    Costs a few substring searches on outputs without special tokens (most teachers'),
    so generate's cost per trace does not move."""
    if not any(mark in text for mark in _MARKS):
        return text
    for delimiter in _ORDERED:
        if delimiter.kind != "turn_end" and delimiter.token in text:
            text = text.replace(delimiter.token, _REPLACEMENT[delimiter.kind])
    for delimiter in _ORDERED:
        if delimiter.kind == "turn_end" and delimiter.token in text:
            text = _cut_at_turn_end(text, delimiter.token)
    return text


def _cut_at_turn_end(text: str, token: str) -> str:
    """Everything up to the first ``token`` that ends the reply. A token before any text
    (a template artefact), or one that ends a reasoning message (harmony's ``<|end|>``
    before the final channel), is only dropped."""
    start = 0
    while True:
        index = text.find(token, start)
        if index == -1:
            return text
        after = text[index + len(token):].lstrip()
        if not text[:index].strip() or after.startswith(("<think>", "</think>")):
            text = text[:index] + text[index + len(token):]
            start = index
            continue
        return text[:index]
