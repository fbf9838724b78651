"""LoRA on the student's LLM through peft: apply, save/load the adapter, merge.

Only the LLM is wrapped (the tower stays frozen, the projector keeps its own flag). A run
that trains with LoRA saves the adapter alone in ``RUN/final/adapter`` and the merged
student in ``RUN/final``, so evaluation and the next stage load a plain SiQ-VL model.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model

from distill.train.config import LoraSettings
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration


def has_lora(model: SiQVLForConditionalGeneration) -> bool:
    return isinstance(model.language_model, PeftModel)


def apply_lora(model: SiQVLForConditionalGeneration, settings: LoraSettings) -> None:
    """Wrap the LLM; afterwards only the LoRA matrices of the LLM require gradients."""
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    model.language_model = get_peft_model(model.language_model, config)


def save_adapter(model: SiQVLForConditionalGeneration, directory: str | Path) -> None:
    model.language_model.save_pretrained(str(directory))


def load_adapter(model: SiQVLForConditionalGeneration, directory: str | Path,
                 trainable: bool = False) -> None:
    model.language_model = PeftModel.from_pretrained(model.language_model, str(directory),
                                                     is_trainable=trainable)


def merge_lora(model: SiQVLForConditionalGeneration) -> None:
    """Fold the adapter into the LLM's weights (same outputs, no peft at inference)."""
    if has_lora(model):
        model.language_model = model.language_model.merge_and_unload()
