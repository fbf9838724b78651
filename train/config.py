"""TrainConfig: one YAML file per stage (``data/configs/*.yaml``), overridable from the CLI.

Every speed layer of the loop is a field here, on by default where it helps:
precision, length bucketing, kernel fusion (compile, Liger), sequence packing, and the
system layer (gradient checkpointing, dataloader workers, pinned memory). ``auto`` means
"decide from the device": e.g. bf16 weights and ``torch.compile`` on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from distill.core.config_files import read_yaml_file, validate, yaml_value
from distill.core.errors import InputError
from distill.core.paths import DATA_DIR
from distill.schemas import content_hash

CONFIGS_DIR = DATA_DIR / "configs"
Auto = Literal["auto"]
# numpy seeds its global generator with 32 bits (torch and Python take more): a seed any
# of them would refuse, or cut to other bits, is refused here.
SEED_LIMIT = 2**32
# A process's CPU threads and data-loader workers: far more than any machine has, and a
# typo (num_workers=10000 starts that many processes) is refused before it forks.
# field -> (lowest, highest, what a value means); a row padded to a multiple of 10**5
# tokens ran out of memory.
AUTO_INT_RANGES = {"threads": (1, 1024, ""),
                   "num_workers": (0, 256, " (0: load in the training process)"),
                   "pad_multiple": (1, 4096, " (every row is padded to a multiple of it)")}


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(min_length=1, default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="names of the LLM's linear layers to adapt (checked against the model)")

    @field_validator("target_modules")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise ValueError("must list layer names, each once (e.g. [q_proj, v_proj])")
        return names


class TrainConfig(BaseModel):
    """Everything that decides what a run computes (hashed into the RunManifest)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["vision", "align", "vqa", "cot"] = Field(
        description="vision: stage 0 tower pretraining; align: stage 1 (projector only); "
                    "vqa: stage 2 instruction/VQA tuning; cot: stage 3 CoT distillation")
    model: str = Field(default="tiny-digits",
                       description="model spec (data/models name or path); unused with --init")
    vision_path: str | None = Field(default=None, description="override the spec's vision tower")
    init: str | None = Field(default=None, description="start from this saved student folder")
    data_start: int = Field(
        default=0, ge=0, description="batches of the data order to skip: a run continuing "
                                     "another's model (init) from the batch that run stopped "
                                     "at, with the same seed, sees what it did not")
    target: Literal["cot", "answer", "gold"] = Field(
        default="answer",
        description="cot: trace reasoning + answer; answer: the trace's final answer only; "
                    "gold: the item's label (its gold answer, or the label the filter derived "
                    "for an item without one)")
    split: str = Field(default="train", description="split to train on (ingest folders)")
    llm: Literal["frozen", "lora", "full"] = "frozen"
    train_projector: bool = True
    lora: LoraSettings = Field(default_factory=LoraSettings)

    seed: int = Field(default=0, ge=0, lt=SEED_LIMIT,
                      description=f"an integer from 0 to {SEED_LIMIT - 1}")
    max_steps: int | None = Field(default=None, ge=1)
    epochs: float | None = Field(default=1.0, gt=0)
    batch_size: int = Field(default=32, ge=1, description="examples per optimizer step (global)")
    micro_batch_size: int | None = Field(default=None, ge=1,
                                         description="examples per forward pass and process")
    micro_batch_tokens: int | Auto | None = Field(
        default="auto", description="token budget of a forward pass (padded tokens: rows x "
                                    "width); replaces micro_batch_size when set. auto: 16384 "
                                    "on a GPU, none on a CPU")
    max_length: int = Field(default=1024, ge=8)
    lr: float = Field(default=1e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = Field(default=(0.9, 0.999),
                                       description="AdamW's two decay rates, each in [0, 1)")
    grad_clip: float | None = Field(default=1.0, gt=0)

    # The five layers of the recipe.
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # bf16: frozen weights are bf16; trained ones keep fp32 values (master copies) and the
    # forward runs under bf16 autocast. "bf16" trains them in bf16 too (no master copies).
    master_weights: Literal["fp32", "bf16"] = "fp32"
    # Sorts each window of batches by length (less padding), so a batch holds examples of one
    # length. Where length follows content it also changes what the student learns: the
    # digits traces' length is their digit count, and bucketed batches of only 2-digit or
    # only 4-digit items slowed the loss ~2x and split seeds 16 points (bench/RESULTS.md,
    # issue 22); the demo's configs turn it off.
    bucketing: bool = True
    bucket_window: int = Field(default=64, ge=1, description="batches sorted together")
    # Off by default: on an H100 at Qwen2.5-0.5B shapes, compiling took ~330 s and the
    # compiled loop was not faster (bench/RESULTS.md, GPU). "auto" = on for CUDA.
    compile: bool | Auto = False
    liger: bool | Auto = "auto"
    packing: bool | Auto = "auto"
    packing_threshold: float = Field(default=0.10, ge=0, le=1)
    pack_max_tokens: int | Auto = "auto"
    # Row widths rounded up to this multiple (few distinct shapes); auto: 64 on a GPU, 1 on a CPU
    pad_multiple: int | Auto = "auto"
    # How packed documents are kept apart (train/attention.py); auto: varlen
    attention: Literal["auto", "varlen", "flex", "sdpa"] = "auto"
    # The loss through the LM head (train/siqvl/loss.py); auto: Liger's fused kernel on a GPU
    # when installed and the LLM is frozen, the chunked torch kernel otherwise
    loss_kernel: Literal["auto", "plain", "chunked", "liger"] = "auto"
    gradient_checkpointing: bool = False
    num_workers: int | Auto = "auto"
    pin_memory: bool | Auto = "auto"
    threads: int | Auto = "auto"
    cache_images: bool | Auto = "auto"

    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    save_every: int = Field(default=200, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    log_every: int = Field(default=10, ge=1)
    tensorboard: bool | Auto = "auto"

    # Stage 0 (vision) only.
    vision_steps: int = Field(default=600, ge=1)
    vision_batch_size: int = Field(default=64, ge=1)

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"each of AdamW's betas must be in [0, 1), got {list(betas)}")
        return betas

    @field_validator("threads", "num_workers", "pad_multiple")
    @classmethod
    def _auto_or_in_range(cls, value: int | str, info: ValidationInfo) -> int | str:
        low, high, meaning = AUTO_INT_RANGES[info.field_name]
        if value != "auto" and not low <= value <= high:
            raise ValueError(f"must be 'auto' or an integer from {low} to {high}{meaning}, "
                             f"got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("give max_steps or epochs")
        if self.stage == "align" and self.llm != "frozen":
            raise ValueError("stage 'align' trains the projector only: llm must be 'frozen'")
        if self.llm == "frozen" and not self.train_projector and self.stage != "vision":
            raise ValueError("nothing to train: llm is frozen and train_projector is false")
        for name in ("micro_batch_tokens", "pack_max_tokens"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1 \
                    and not (name == "pack_max_tokens" and value == 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of "
                             f"micro_batch_size {self.micro_batch_size}")
        return self

    def hash(self) -> str:
        return content_hash(self.model_dump(mode="json"))

    def prompt_mode(self) -> Literal["cot", "direct"]:
        return "cot" if self.target == "cot" else "direct"


# Fields that change how fast a run goes, not what it computes: a resumed run may change them.
SPEED_FIELDS = {"compile", "liger", "num_workers", "pin_memory", "threads", "cache_images",
                "log_every", "tensorboard", "save_every", "keep_checkpoints",
                "gradient_checkpointing", "attention", "loss_kernel", "pad_multiple",
                "micro_batch_tokens"}


def outcome_hash(config: TrainConfig) -> str:
    return content_hash(config.model_dump(mode="json", exclude=SPEED_FIELDS))


def recipe_hash(config: TrainConfig) -> str:
    """What a run computes, its seed aside: the seeds of one recipe share this hash, so a
    comparison can group them (distill.evaluate.seeds)."""
    return content_hash(config.model_dump(mode="json", exclude=SPEED_FIELDS | {"seed"}))


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                ) -> TrainConfig:
    """A config by path or by name in data/configs, with ``key=value`` overrides (YAML values,
    dotted keys for nested fields: ``lora.r=8``). A bad override is named as such."""
    document = read_yaml_file(name_or_path, CONFIGS_DIR, "train config")
    data = document.data or {}
    if not isinstance(data, dict):
        raise InputError("a train config must be a mapping", file=document.path,
                         reason="bad_config")
    for item in overrides:
        where = apply_override(data, item)
        document.lines.pop(where, None)
        document.origins[where] = f"override {item!r}"
    return validate(document, TrainConfig, data=data)


def apply_override(data: dict[str, Any], item: str) -> tuple[str, ...]:
    """Set ``key=value`` in ``data``; returns the key's path."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise InputError(f"override {item!r} is not KEY=VALUE", field=key or item,
                         reason="bad_config")
    target = data
    parts = key.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise InputError(f"override {item!r}: {part!r} is not a mapping", field=key,
                             reason="bad_config")
    target[parts[-1]] = yaml_value(raw, f"override {item!r}") if raw else None
    return tuple(parts)
