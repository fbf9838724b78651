"""Building a student from a model spec: local pretrained paths (the real use) or small
configs (tests, the embedded default, GPU benchmarks with real shapes and random weights).

A model spec is a YAML file (see ``data/models/*.yaml``)::

    tokenizer: tiny-tokenizer            # folder; relative to the spec file, or data/models/
    image_size: 32
    pixel_shuffle_factor: 2
    vision: {model_type: siglip2_vision_model, hidden_size: 128, ...}   # or vision_path:
    llm: {model_type: qwen2, hidden_size: 192, vocab_size: auto, ...}    # or llm_path:
    prompts: {cot: question-cot, direct: question-direct}   # optional; default cot, direct

``vision_path`` may point at a SigLIP/SigLIP-2 checkpoint (full or vision-only) or at a
stage-0 tower saved by ``distill.train.vision_pretrain``; ``llm_path`` at a Qwen2/Qwen2.5 folder.
Paths are never fetched from a hub: they must exist on disk.

``prompts`` names the prompt file (prompts/NAME.yaml) each mode asks the student with. The
default is the teachers' own prompts, right for a pretrained LLM that reads instructions;
a student trained from scratch learns nothing from a constant instruction and pays for its
tokens at every step, so the tiny specs ask with the question alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from distill.core.config_files import ConfigFile, KeyProblem, load_config_file
from distill.core.errors import DistillError
from distill.core.model_folders import SIQVL_MODEL_TYPE, read_model_type
from distill.core.paths import DATA_DIR
from distill.core.prompts import STUDENT_KINDS, load_prompt
from distill.train.siqvl.configuration import TEXT_MODEL_TYPES, VISION_MODEL_TYPES, SiQVLConfig
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration
from distill.train.siqvl.projector import PatchGridError
from distill.train.siqvl.student_processor import (
    PROMPT_FILES,
    ProcessorSettings,
    PromptMode,
    StudentProcessor,
)

MODELS_DIR = DATA_DIR / "models"
@dataclass
class ModelSpec:
    """Where each part of the student comes from."""

    tokenizer: str
    image_size: int
    pixel_shuffle_factor: int = 2
    vision: dict[str, Any] | None = None
    vision_path: str | None = None
    llm: dict[str, Any] | None = None
    llm_path: str | None = None
    vision_feature_layer: int = -1
    include_system: bool = True
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPT_FILES))
    base_dir: Path = MODELS_DIR

    def resolve(self, path: str) -> Path:
        """A path as written in the spec: absolute, relative to the spec, or under data/models."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            return candidate
        for base in (self.base_dir, MODELS_DIR, Path.cwd()):
            if (base / candidate).exists():
                return base / candidate
        return self.base_dir / candidate


class ModelSpecFile(ConfigFile):
    """A model spec as written (see the module docstring)."""

    description: str = ""
    tokenizer: str
    image_size: int = Field(ge=1)
    pixel_shuffle_factor: int = Field(default=2, ge=1)
    vision_feature_layer: int = -1
    include_system: bool = True
    image_mean: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])
    vision: dict[str, Any] | None = None
    vision_path: str | None = None
    llm: dict[str, Any] | None = None
    llm_path: str | None = None
    prompts: dict[PromptMode, str] = Field(default_factory=lambda: dict(PROMPT_FILES))

    @field_validator("prompts")
    @classmethod
    def _prompts_exist(cls, prompts: dict[str, str]) -> dict[str, str]:
        """A misspelt prompt name fails when the spec is read, not after stage 0."""
        for name in prompts.values():
            load_prompt(name, kind=STUDENT_KINDS)  # exists and fits a student, or InputError
        return prompts  # modes it leaves out get ProcessorSettings' defaults

    @model_validator(mode="after")
    def _one_source_per_part(self) -> ModelSpecFile:
        for part, allowed in (("vision", VISION_MODEL_TYPES), ("llm", TEXT_MODEL_TYPES)):
            config, path = getattr(self, part), getattr(self, f"{part}_path")
            if (config is None) == (path is None):
                raise KeyProblem((part,), f"give exactly one of '{part}' (a config) or "
                                          f"'{part}_path'")
            if config is not None and config.get("model_type") not in allowed:
                raise KeyProblem((part, "model_type"),
                                 f"model_type must be one of {list(allowed)}")
        return self


def load_model_spec(name_or_path: str | Path) -> ModelSpec:
    """A spec by path, or by name of a file in data/models (``tiny-digits``)."""
    spec, path = load_config_file(name_or_path, MODELS_DIR, "model spec", ModelSpecFile)
    return ModelSpec(**spec.model_dump(exclude={"description"}), base_dir=path.parent)


def _existing(spec: ModelSpec, path: str, what: str) -> Path:
    resolved = spec.resolve(path)
    if not resolved.exists():
        raise DistillError(f"{what} not found at {resolved} (models are only loaded from local "
                           "folders; nothing is downloaded)")
    return resolved


def vision_config_of(path: Path):
    """The vision config of a full SigLIP(-2) checkpoint or of a vision-only one."""
    config = AutoConfig.from_pretrained(path)
    config = getattr(config, "vision_config", config)
    if config.model_type not in VISION_MODEL_TYPES:
        raise DistillError(f"{path} holds a {config.model_type!r} model, not a SigLIP/SigLIP-2 "
                           "vision tower")
    return config


def load_vision_tower(path: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A pretrained tower from a local folder (the vision half of a full checkpoint works)."""
    config = vision_config_of(path)
    tower, info = _vision_class(config).from_pretrained(path, config=config, dtype=dtype,
                                                       output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith("head.")]
    if missing:
        raise DistillError(f"{path} has no weights for {len(missing)} vision tower tensor(s) "
                           f"(e.g. {missing[0]}): not a SigLIP/SigLIP-2 checkpoint")
    return tower


def _vision_class(config) -> type:
    from transformers import Siglip2VisionModel, SiglipVisionModel

    return Siglip2VisionModel if config.model_type == "siglip2_vision_model" else SiglipVisionModel


def build_student(spec: ModelSpec, *, dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> tuple[SiQVLForConditionalGeneration, StudentProcessor]:
    """A fresh student: pretrained parts where the spec names paths, seeded random elsewhere."""
    tokenizer = AutoTokenizer.from_pretrained(_existing(spec, spec.tokenizer, "tokenizer"))
    image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    vision_tower = language_model = None
    if spec.vision_path is not None:
        vision_tower = load_vision_tower(_existing(spec, spec.vision_path, "vision tower"), dtype)
        vision_config = vision_tower.config
    else:
        vision_config = AutoConfig.for_model(**spec.vision)
    if spec.llm_path is not None:
        llm_dir = _existing(spec, spec.llm_path, "LLM")
        language_model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=dtype)
        text_config = language_model.config
    else:
        llm = dict(spec.llm)
        if llm.get("vocab_size", "auto") == "auto":
            llm["vocab_size"] = len(tokenizer)
        text_config = AutoConfig.for_model(**llm)
    if len(tokenizer) > text_config.vocab_size:
        raise DistillError(f"the tokenizer has {len(tokenizer)} tokens but the LLM's vocabulary "
                           f"has {text_config.vocab_size}")
    config = SiQVLConfig(vision_config=vision_config, text_config=text_config,
                         image_size=spec.image_size,
                         pixel_shuffle_factor=spec.pixel_shuffle_factor,
                         image_token_id=int(image_token_id),
                         vision_feature_layer=spec.vision_feature_layer)
    torch.manual_seed(seed)
    try:
        model = SiQVLForConditionalGeneration(config, vision_tower=vision_tower,
                                              language_model=language_model)
    except PatchGridError as exc:
        raise DistillError(f"model spec: {exc}") from None
    model.to(dtype)
    settings = ProcessorSettings(image_size=spec.image_size,
                                 num_image_tokens=config.num_image_tokens,
                                 image_mean=list(spec.image_mean), image_std=list(spec.image_std),
                                 include_system=spec.include_system,
                                 prompts=dict(spec.prompts))
    return model, StudentProcessor(tokenizer, settings)


def load_student(directory: str | Path, *, dtype: torch.dtype = torch.float32
                 ) -> tuple[SiQVLForConditionalGeneration, StudentProcessor]:
    """A saved student (``RUN/final`` or any ``save_student`` folder): model + processor."""
    directory = Path(directory)
    _require_siqvl_folder(directory)
    try:
        model, info = SiQVLForConditionalGeneration.from_pretrained(
            directory, dtype=dtype, output_loading_info=True)
    except RuntimeError as exc:  # weight shapes that differ from the config's
        raise DistillError(f"{directory}: the weights do not fit the model its config.json "
                           f"describes; was the folder written by another model? ({exc})"
                           ) from None
    except OSError as exc:  # no weights file, or one that cannot be read
        raise DistillError(f"{directory}: cannot load the student's weights ({exc})") from None
    except PatchGridError as exc:  # a config.json whose grid the projector cannot split
        raise DistillError(f"{directory}: {exc}") from None
    misfits = {kind: names for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
               if (names := sorted(map(str, info.get(kind) or [])))}
    if misfits:  # transformers would start those weights from random values, silently
        detail = "; ".join(f"{kind.replace('_', ' ')}: {names[:3]}"
                           + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                           for kind, names in misfits.items())
        raise DistillError(f"{directory}: the weights do not fit the model its config.json "
                           f"describes ({detail}); was the folder written by another model?")
    return model, StudentProcessor.from_pretrained(directory)


def _require_siqvl_folder(directory: Path) -> None:
    """Refuse another model's checkpoint before transformers half-loads it with a warning."""
    model_type = read_model_type(directory)
    if model_type != SIQVL_MODEL_TYPE:
        raise DistillError(
            f"{directory} holds a {model_type!r} model, not a SiQ-VL student "
            f"(model_type {SIQVL_MODEL_TYPE!r}); give a folder written by distill "
            "train (RUN/final) or build a student from a model spec instead")


def save_student(model: SiQVLForConditionalGeneration, processor: StudentProcessor,
                 directory: str | Path) -> None:
    """One self-contained folder: weights, config, tokenizer, processor settings, chat
    template, and the portable code with ``auto_map`` (transformers' Auto classes load it
    with ``trust_remote_code=True``; vLLM serves it through this package's plugin).

    The generation config (and the LLM's config) name the student's end-of-answer and
    padding tokens, so the folder's own ``generate`` stops where the toolkit's does.
    """
    for config in (model.generation_config, model.config.text_config):
        config.eos_token_id = processor.eos_token_id
        config.pad_token_id = processor.pad_token_id
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
