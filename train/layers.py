"""The speed layers of the training loop, resolved for a device and applied to a student.

``TrainConfig`` says what a user asked for (``auto`` where the device should decide);
``resolve_layers`` turns it into ``Layers`` (recorded with the run), ``apply_kernel_layers``
puts them on the model. Each choice is measured in bench/train_throughput.py (CPU) and
bench/gpu_throughput.sh (GPU).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import torch

from distill.core.errors import DistillError, require_extra
from distill.train.attention import IMPLEMENTATIONS
from distill.train.batching import Batch, EncodedDataset, MicroSplit, epoch_plan, padding_fraction
from distill.train.config import TrainConfig
from distill.train.lora import has_lora
from distill.train.runtime import Runtime
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration


@dataclass
class Layers:
    """The speed layers as resolved for this device (recorded in the run's metrics)."""

    bf16: bool
    bucketing: bool
    compile: bool
    liger: bool
    packing: bool
    pack_max_tokens: int | None  # None: no cap; 0: the micro-batch's longest example
    gradient_checkpointing: bool
    num_workers: int
    pin_memory: bool
    padding_after_bucketing: float
    split: MicroSplit = field(default_factory=MicroSplit)
    attention: str = "varlen"
    loss_kernel: str = "chunked"
    autocast: bool = False  # bf16 autocast over fp32 master weights of a fully trained LLM


# Forward-pass token budget on a GPU: 16k tokens of Qwen2.5-0.5B activations in bf16 take
# ~16 GB in stage 2 (~1 MB a token over 24 layers); bench/gpu_throughput.sh measures it.
GPU_MICRO_BATCH_TOKENS = 16384
GPU_PAD_MULTIPLE = 64


def resolve_layers(config: TrainConfig, runtime: Runtime, dataset: EncodedDataset,
                   micro_batch_size: int) -> Layers:
    cuda = runtime.cuda
    tokens = config.micro_batch_tokens
    if tokens == "auto":
        tokens = GPU_MICRO_BATCH_TOKENS if cuda and not config.micro_batch_size else None
    multiple = (GPU_PAD_MULTIPLE if cuda else 1) if config.pad_multiple == "auto" \
        else int(config.pad_multiple)
    attention = "varlen" if config.attention == "auto" else config.attention
    if attention == "flex" and not cuda:
        raise DistillError("attention: flex has no backward pass on a CPU (torch "
                           f"{torch.__version__}); use varlen or sdpa")
    split = MicroSplit(None if tokens else micro_batch_size, tokens, multiple, False,
                       runtime.world_size)
    plan = epoch_plan(dataset.lengths, config.batch_size, config.seed, 0,
                      bucketing=config.bucketing, window=config.bucket_window)
    padding = padding_fraction(plan, dataset.lengths, split)
    # Per-document attention (varlen, flex) keeps long packed rows cheap: on a GPU, auto
    # packs each micro-batch into one row of the token budget (one fixed shape, no
    # padding). On a CPU auto packs only when padding after bucketing stays above the
    # threshold, into rows no longer than the micro-batch's longest example: it fills
    # padding and never lengthens a row (one long row measured ~10% slower than bucketed
    # rows on the 2-core box, and sdpa's dense block mask costs a row's length squared).
    per_document = attention in ("varlen", "flex")
    packing = ((cuda and per_document) or padding > config.packing_threshold) \
        if config.packing == "auto" else bool(config.packing)
    pack_max = (tokens or 0) if config.pack_max_tokens == "auto" \
        else int(config.pack_max_tokens)
    liger_ok = importlib.util.find_spec("liger_kernel") is not None
    liger = (cuda and liger_ok) if config.liger == "auto" else bool(config.liger)
    loss_kernel = config.loss_kernel
    if loss_kernel == "auto":
        # Liger's fused CE measured slower than chunking when the LLM trains (the seed's
        # stage 2); bench/gpu_throughput.sh measures both per stage.
        loss_kernel = "liger" if cuda and liger_ok and config.llm == "frozen" else "chunked"
    compile_on = cuda if config.compile == "auto" else bool(config.compile)
    workers = (min(4, max(1, (torch.get_num_threads() or 1))) if cuda else 0) \
        if config.num_workers == "auto" else int(config.num_workers)
    pin = cuda if config.pin_memory == "auto" else bool(config.pin_memory)
    autocast = runtime.dtype == torch.bfloat16 and config.master_weights == "fp32" \
        and config.llm == "full"
    return Layers(bf16=runtime.dtype == torch.bfloat16, bucketing=config.bucketing,
                  compile=compile_on, liger=liger, packing=packing, pack_max_tokens=pack_max,
                  gradient_checkpointing=config.gradient_checkpointing, num_workers=workers,
                  pin_memory=pin, padding_after_bucketing=round(padding, 4),
                  split=MicroSplit(split.size, tokens, multiple, packing and bool(tokens),
                                   runtime.world_size),
                  attention=attention, loss_kernel=loss_kernel, autocast=autocast)


def apply_kernel_layers(model: SiQVLForConditionalGeneration, layers: Layers) -> None:
    lm = model.causal_lm()
    lm.config._attn_implementation = IMPLEMENTATIONS[layers.attention]
    model.loss_kernel = layers.loss_kernel
    if layers.loss_kernel == "liger" or layers.liger:
        require_extra("liger_kernel.transformers", "liger", "Liger kernels")
    if layers.liger:
        apply_liger_kernels(lm)
    if layers.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if has_lora(model) or not any(p.requires_grad for p in lm.parameters()):
            lm.enable_input_require_grads()
    if layers.compile:
        lm.model.compile(dynamic=True)


def apply_liger_kernels(lm: torch.nn.Module) -> None:
    """Liger's RMSNorm and SwiGLU on this model's modules only.

    ``apply_liger_kernel_to_qwen2`` also replaces classes and the RoPE function of the
    transformers module, which would change every Qwen2 built later in the process (a
    baseline measured after a Liger run in one benchmark process, say); those are put back
    at once. RoPE stays transformers' (Liger's is a module-wide switch only).
    """
    from liger_kernel.transformers import apply_liger_kernel_to_qwen2
    from transformers.models.qwen2 import modeling_qwen2

    names = ("apply_rotary_pos_emb", "Qwen2RMSNorm", "Qwen2MLP")
    saved = {name: getattr(modeling_qwen2, name) for name in names}
    try:
        apply_liger_kernel_to_qwen2(model=lm, rope=False, rms_norm=True, swiglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
    finally:
        for name, value in saved.items():
            setattr(modeling_qwen2, name, value)


def attention_kwargs(batch: Batch, layers: Layers) -> dict:
    """Document boundaries for the per-document attention; the others read position ids."""
    return batch.attention_kwargs() if layers.attention == "varlen" else {}
