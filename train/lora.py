"""LoRA on the student's LLM through peft: apply, save/load the adapter, merge.

Only the LLM is wrapped (the tower stays frozen, the projector keeps its own flag). A run
that trains with LoRA saves the adapter alone in ``RUN/final/adapter`` and the merged
student in ``RUN/final``, so evaluation and the next stage load a plain SiQ-VL model.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from distill.core.errors import InputError
from distill.train.config import LoraSettings
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration


def has_lora(model: SiQVLForConditionalGeneration) -> bool:
    return isinstance(model.language_model, PeftModel)


def apply_lora(model: SiQVLForConditionalGeneration, settings: LoraSettings) -> None:
    """Wrap the LLM; afterwards only the LoRA matrices of the LLM require gradients."""
    check_lora_settings(model.language_model, settings)
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


def check_lora_settings(llm: nn.Module, settings: LoraSettings) -> None:
    """Each target names linear layers of this LLM (as peft matches a name: the layer's
    own name, or its dotted path's end), and the rank fits them: one line naming the
    field and what this model has, where peft would raise or allocate without end."""
    linear = {name: module for name, module in llm.named_modules()
              if isinstance(module, nn.Linear)}
    available = sorted({name.rsplit(".", 1)[-1] for name in linear})
    widths = []
    for target in settings.target_modules:
        hits = [m for name, m in linear.items() if name == target or name.endswith("." + target)]
        if not hits:
            raise InputError(f"{target!r} names no linear layer of the language model; it has "
                             f"{', '.join(available)}", field="lora.target_modules",
                             reason="bad_config")
        widths += [min(m.in_features, m.out_features) for m in hits]
    if settings.r > min(widths):
        raise InputError(f"rank {settings.r} is above the smallest width of the targeted "
                         f"layers ({min(widths)}), where an adapter reaches full rank; use "
                         f"r <= {min(widths)}", field="lora.r", reason="bad_config")
