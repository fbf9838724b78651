"""The training loop: one process or many (torchrun), five switchable speed layers.

1. precision: weights loaded in bf16 on a GPU (not only autocast); every trained
   parameter keeps an fp32 master copy (a fully trained LLM runs under bf16 autocast);
   the vision tower runs under ``no_grad``; TF32 matmuls; fused AdamW on CUDA.
2. batching: length bucketing (``train.batching.epoch_plan``), micro-batches cut by a token
   budget, widths rounded up to a multiple of 64 on a GPU (a small, fixed set of shapes).
3. kernel fusion: the loss through the LM head never materializes all logits (chunked
   torch kernel, or Liger's fused one); Liger's RMSNorm/SwiGLU when installed;
   ``torch.compile`` of the LLM backbone only when asked.
4. packing: examples concatenated with per-example position ids and per-document
   attention (``train.attention``: PyTorch's varlen flash kernel on a GPU, one SDPA call
   per document elsewhere); ``auto`` packs whenever the attention keeps documents apart
   without a dense mask.
5. system: no gradient checkpointing unless asked, dataloader workers, pinned memory.

The loss of a step is the sum of token losses over the whole global batch divided by its
number of label tokens, whatever the split into micro-batches and processes: gradient
accumulation and DDP give the same update as one big batch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from distill.core.errors import DistillError
from distill.core.locks import lock_path_for, single_writer
from distill.core.progress import progress_bar
from distill.core.shards import read_json_model, write_json_atomic
from distill.schemas import RunManifest, content_hash
from distill.train import checkpoint as ckpt
from distill.train.batching import (
    Batch,
    EncodedDataset,
    MicroSplit,
    epoch_plan,
    pack_collate,
    pad_collate,
)
from distill.train.config import TrainConfig, outcome_hash, recipe_hash
from distill.train.data import TrainingSet, load_training_set
from distill.train.layers import Layers, apply_kernel_layers, attention_kwargs, resolve_layers
from distill.train.lora import apply_lora, has_lora, merge_lora, save_adapter
from distill.train.metrics import MetricsLog, memory_gb
from distill.train.runtime import Runtime, setup_runtime, teardown_runtime
from distill.train.schedule import lr_factor
from distill.train.siqvl.build import (
    build_student,
    load_model_spec,
    load_student,
    load_vision_tower,
    save_student,
)
from distill.train.siqvl.modeling import SiQVLForConditionalGeneration
from distill.train.siqvl.processing import SiQVLProcessor

log = logging.getLogger(__name__)


class TrainingDivergedError(DistillError):
    """The loss or the gradient became NaN/inf: the run stops instead of wasting compute."""


# -- model -----------------------------------------------------------------------------------
def prepare_model(config: TrainConfig, runtime: Runtime, init: str | None
                  ) -> tuple[SiQVLForConditionalGeneration, SiQVLProcessor]:
    """Load or build the student, freeze what this stage does not train, move to device."""
    init = init or config.init
    if init:
        model, processor = load_student(init, dtype=runtime.dtype)
        if config.vision_path:
            tower = load_vision_tower(Path(config.vision_path), runtime.dtype)
            model.vision_tower.load_state_dict(tower.state_dict())
    else:
        spec = load_model_spec(config.model)
        if config.vision_path:
            spec.vision, spec.vision_path = None, config.vision_path
        model, processor = build_student(spec, dtype=runtime.dtype, seed=config.seed)
    model.requires_grad_(False)
    model.projector.requires_grad_(config.train_projector)
    if config.llm == "full":
        model.language_model.requires_grad_(True)
    elif config.llm == "lora":
        apply_lora(model, config.lora)
    if runtime.dtype != torch.float32 and config.master_weights == "fp32":
        for param in model.parameters():  # fp32 master weights for what this stage trains
            if param.requires_grad:
                param.data = param.data.float()
    model.to(runtime.device)
    model.train()
    return model, processor


# -- optimizer ---------------------------------------------------------------------------------
def make_optimizer(model: torch.nn.Module, config: TrainConfig, runtime: Runtime,
                   total_steps: int) -> tuple[torch.optim.Optimizer, object, int]:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise DistillError("this stage has no trainable parameters")
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=config.betas,
                                  fused=True if runtime.cuda else None)
    warmup = config.warmup_steps if config.warmup_steps is not None \
        else round(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps, config.min_lr_ratio))
    return optimizer, scheduler, warmup


# -- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepPlan:
    step: int
    epoch: int
    batch_in_epoch: int
    micro: list[list[int]]  # this process's micro-batches
    real_tokens: int  # whole global batch
    label_tokens: int  # whole global batch
    examples: int


class MicroBatches(Dataset):
    """This process's micro-batches of the remaining steps, collated in order (workers
    prefetch them while the model computes)."""

    def __init__(self, dataset: EncodedDataset, steps: list[StepPlan], layers: Layers,
                 pad_id: int) -> None:
        self.dataset, self.layers, self.pad_id = dataset, layers, pad_id
        self.flat = [micro for plan in steps for micro in plan.micro]

    def __len__(self) -> int:
        return len(self.flat)

    def __getitem__(self, index: int) -> Batch:
        examples = [self.dataset[i] for i in self.flat[index]]
        multiple = self.layers.split.multiple
        if self.layers.packing:
            return pack_collate(examples, self.pad_id, self.layers.pack_max_tokens, multiple)
        return pad_collate(examples, self.pad_id, multiple)


def plan_steps(dataset: EncodedDataset, config: TrainConfig, runtime: Runtime,
               split: MicroSplit, start: int, total: int) -> list[StepPlan]:
    per_epoch = len(dataset) // config.batch_size
    plans, cached = [], {}
    for step in range(start, total):
        epoch, index = divmod(step, per_epoch)
        if epoch not in cached:
            cached = {epoch: epoch_plan(dataset.lengths, config.batch_size, config.seed, epoch,
                                        bucketing=config.bucketing, window=config.bucket_window)}
        batch = cached[epoch][index]
        micros = split.split(batch, dataset.lengths)
        plans.append(StepPlan(step, epoch, index, micros[runtime.rank::runtime.world_size],
                              int(dataset.lengths[batch].sum()),
                              int(dataset.label_counts[batch].sum()), len(batch)))
    return plans


# -- the run ---------------------------------------------------------------------------------
def _micro_batch_size(config: TrainConfig, runtime: Runtime) -> int:
    micro = config.micro_batch_size or config.batch_size // runtime.world_size
    n_micro = config.batch_size // max(micro, 1)
    if micro < 1 or config.batch_size % micro or n_micro % runtime.world_size:
        raise DistillError(
            f"batch_size {config.batch_size} must split into micro-batches of "
            f"{micro} examples, a multiple of {runtime.world_size} process(es) of them")
    return micro


def _check_out(out: Path, resume: bool) -> None:
    has_run = (out / "manifest.json").exists() or ckpt.latest_checkpoint(out) is not None
    if has_run and not resume:
        raise DistillError(f"{out} already holds a run; pass --resume to continue it, or "
                           "choose another --out")


def train(config: TrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          init: str | None = None, wait: bool = False) -> RunManifest:
    """Run (or resume) one training stage; returns the RunManifest written to OUT.

    One run per OUT: the first process of a run (rank 0) holds OUT's single-writer lock;
    another run there stops naming it, or waits for it with ``wait``."""
    with run_lock(out, wait):
        return _train_stage(config, data, out, resume, init)


def run_lock(out: str | Path, wait: bool) -> AbstractContextManager:
    if os.environ.get("RANK", "0") != "0":  # the ranks of one run share its folder
        return nullcontext()
    Path(out).mkdir(parents=True, exist_ok=True)
    return single_writer(lock_path_for(out), f"training run {out}", wait=wait)


def _train_stage(config: TrainConfig, data: str | Path, out: str | Path, resume: bool,
                 init: str | None) -> RunManifest:
    if config.stage == "vision":
        from distill.train.vision_pretrain import pretrain_vision

        return pretrain_vision(config, Path(out), resume=resume)
    out = Path(out)
    _check_out(out, resume)
    runtime = setup_runtime(config)
    try:
        return _train(config, Path(data), out, runtime, resume, init)
    finally:
        teardown_runtime(runtime)


def _train(config: TrainConfig, data: Path, out: Path, runtime: Runtime, resume: bool,
           init: str | None) -> RunManifest:
    if resume and ckpt.is_finished(out):
        log.warning("%s already finished; nothing to resume", out)
        return read_json_model(out / "manifest.json", RunManifest)
    context, parts, state, resumed = prepare_run(config, data, out, runtime, resume, init)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=runtime.is_main,
                         tensorboard=config.tensorboard,
                         resume_step=state.step if resumed else None)
    if runtime.is_main and not resumed:
        write_manifest(context, state, "none", None)
    try:
        state = run_steps(context, parts, state, metrics)
    finally:
        metrics.close()
    return finish(context, parts.model, parts.processor, state)


def prepare_run(config: TrainConfig, data: Path, out: Path, runtime: Runtime, resume: bool,
                init: str | None, encoded: EncodedDataset | None = None
                ) -> tuple[RunContext, TrainingParts, ckpt.TrainerState, bool]:
    """Everything a run needs before its first step: the student with its layers applied,
    the encoded data, the optimizer, and the state (from the latest checkpoint when
    resuming; the last value says whether one was loaded). ``encoded``: data already
    encoded by the same tokenizer (benchmarks reuse it across configs)."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    training_set = load_training_set(data, config.target, config.split)
    model, processor = prepare_model(config, runtime, init)
    dataset = encoded or encode_dataset(training_set, processor, config)
    micro = _micro_batch_size(config, runtime)
    layers = resolve_layers(config, runtime, dataset, micro)
    apply_kernel_layers(model, layers)
    per_epoch = len(dataset) // config.batch_size
    total = config.max_steps or max(1, math.ceil((config.epochs or 1) * per_epoch))
    fsdp = runtime.distributed and config.strategy == "fsdp"
    engine = wrap_distributed(model, config, runtime) if runtime.distributed else model
    optimizer, scheduler, _ = make_optimizer(model, config, runtime, total)
    run_hash = outcome_hash(config)
    data_key = content_hash({"config": run_hash, "data": training_set.manifest_sha256,
                             "init": str(init or config.init or "")})
    state = ckpt.TrainerState(0, 0, 0, 0, 0, data_key)
    latest = ckpt.latest_checkpoint(out) if resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer, scheduler, rank=runtime.rank,
                                     world_size=runtime.world_size, outcome_hash=data_key,
                                     fsdp=fsdp)
        log.warning("resuming %s from step %d", out, state.step)
    out.mkdir(parents=True, exist_ok=True)
    context = RunContext(config, runtime, training_set, out, init, data_key, layers, total,
                         micro, fsdp)
    parts = TrainingParts(model, engine, processor, dataset, optimizer, scheduler)
    return context, parts, state, latest is not None


def encode_dataset(training_set: TrainingSet, processor: SiQVLProcessor,
                   config: TrainConfig) -> EncodedDataset:
    cache = config.cache_images if config.cache_images != "auto" else (
        len(training_set.items) * 3 * processor.settings.image_size ** 2 < 2**30)
    dataset = EncodedDataset(training_set.items, processor, config.max_length, bool(cache))
    if dataset.dropped:
        log.warning("dropped %d example(s) longer than max_length=%d", dataset.dropped,
                    config.max_length)
    if len(dataset) < config.batch_size:
        raise DistillError(f"{len(dataset)} usable example(s) is fewer than one batch "
                           f"(batch_size {config.batch_size})")
    return dataset


@dataclass
class RunContext:
    config: TrainConfig
    runtime: Runtime
    training_set: TrainingSet
    out: Path
    init: str | None
    run_key: str
    layers: Layers
    total_steps: int
    micro_batch_size: int
    fsdp: bool = False


@dataclass
class TrainingParts:
    """The live objects of a run: the student (and its DDP/FSDP wrapper, ``engine``, which
    runs the forward pass), its processor, the encoded data, the optimizer and schedule."""

    model: SiQVLForConditionalGeneration
    engine: torch.nn.Module
    processor: SiQVLProcessor
    dataset: EncodedDataset
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def wrap_distributed(model: torch.nn.Module, config: TrainConfig, runtime: Runtime):
    if config.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.causal_lm().model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[runtime.local_rank] if runtime.cuda
                                   else None)


def run_steps(ctx: RunContext, parts: TrainingParts, state: ckpt.TrainerState,
              metrics: MetricsLog) -> ckpt.TrainerState:
    config, runtime, layers = ctx.config, ctx.runtime, ctx.layers
    model, engine, processor = parts.model, parts.engine, parts.processor
    optimizer, scheduler = parts.optimizer, parts.scheduler
    plans = plan_steps(parts.dataset, config, runtime, layers.split, state.step,
                       ctx.total_steps)
    loader = DataLoader(MicroBatches(parts.dataset, plans, layers, processor.pad_token_id),
                        batch_size=None, shuffle=False, num_workers=layers.num_workers,
                        pin_memory=layers.pin_memory,
                        persistent_workers=False, prefetch_factor=4 if layers.num_workers else None)
    batches = iter(loader)
    trainable = [p for p in model.parameters() if p.requires_grad]
    window = {"tokens": 0, "examples": 0, "time": 0.0, "padded": 0, "loss": 0.0, "n": 0}
    started = time.perf_counter()
    # Named after the run folder: several runs of one stage (the demo's students) stay apart.
    with progress_bar(f"train {ctx.out.name}", total=ctx.total_steps, unit="steps") as bar:
        bar.advance(state.step)
        for plan in plans:
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float32)
            padded = 0
            scale = runtime.world_size / max(plan.label_tokens, 1)
            for k in range(len(plan.micro)):
                batch: Batch = next(batches).to(runtime.device, non_blocking=True)
                padded += batch.padded_tokens
                last = k == len(plan.micro) - 1
                sync = nullcontext()
                if runtime.distributed and not last and hasattr(engine, "no_sync"):
                    sync = engine.no_sync()  # DDP: reduce gradients once, after the last
                elif ctx.fsdp:
                    engine.set_requires_gradient_sync(last)
                with sync:
                    with torch.autocast(runtime.device.type, torch.bfloat16,
                                        enabled=layers.autocast):
                        output = engine(input_ids=batch.input_ids,
                                        pixel_values=processor.normalize(batch.pixel_values,
                                                                         runtime.dtype),
                                        position_ids=batch.position_ids, labels=batch.labels,
                                        use_cache=False, **attention_kwargs(batch, layers))
                    (output.loss_sum * scale).backward()
                loss_sum += output.loss_sum.detach().float()
            loss = runtime.all_reduce_sum(loss_sum).item() / max(plan.label_tokens, 1)
            grad_norm = clip_gradients(model, trainable, config.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                raise diverged(ctx, plan.step, loss, grad_norm, scheduler)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - t0
            state = ckpt.TrainerState(plan.step + 1, plan.epoch, plan.batch_in_epoch + 1,
                                      state.examples_seen + plan.examples,
                                      state.tokens_seen + plan.real_tokens, state.outcome_hash,
                                      loss)
            window["tokens"] += plan.real_tokens
            window["examples"] += plan.examples
            window["time"] += elapsed
            window["padded"] += padded * runtime.world_size
            window["loss"] += loss
            window["n"] += 1
            bar.advance()
            if state.step % config.log_every == 0 or state.step == ctx.total_steps:
                record = log_record(state, window, scheduler, grad_norm, runtime, started)
                metrics.log(record)
                bar.note(f"loss {record['loss']:.4f}  {record['tokens_per_s']:,.0f} tok/s  "
                         f"{record['memory_gb']:.2f} GB")
                window = dict.fromkeys(window, 0)
                window["time"] = 0.0
            if state.step % config.save_every == 0 and state.step < ctx.total_steps:
                path = ckpt.save_checkpoint(
                    ctx.out, state, model, optimizer, scheduler, rank=runtime.rank,
                    world_size=runtime.world_size, is_main=runtime.is_main,
                    barrier=runtime.barrier, keep=config.keep_checkpoints, fsdp=ctx.fsdp)
                if runtime.is_main:
                    write_manifest(ctx, state, path.name, None)
    return state


def clip_gradients(model, trainable: list[torch.Tensor], max_norm: float | None) -> float:
    if max_norm is None:
        norms = [p.grad.detach().float().norm() for p in trainable if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    return float(torch.nn.utils.clip_grad_norm_(trainable, max_norm))


def diverged(ctx: RunContext, step: int, loss: float, grad_norm: float,
             scheduler) -> TrainingDivergedError:
    last = ckpt.latest_checkpoint(ctx.out)
    lr = scheduler.get_last_lr()[0]
    where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return TrainingDivergedError(
        f"training diverged at step {step + 1}: loss={loss}, grad norm={grad_norm} "
        f"(lr {lr:.3g}). Lower the learning rate, raise warmup, or check the data; {where}")


def log_record(state: ckpt.TrainerState, window: dict, scheduler, grad_norm: float,
               runtime: Runtime, started: float) -> dict:
    seconds = max(window["time"], 1e-9)
    n = max(window["n"], 1)
    return {
        "step": state.step,
        "epoch": state.epoch,
        "loss": window["loss"] / n,
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": grad_norm,
        "tokens_per_s": window["tokens"] / seconds,
        "examples_per_s": window["examples"] / seconds,
        "padding_fraction": 1 - window["tokens"] / max(window["padded"], 1),
        "memory_gb": memory_gb(runtime.device),
        "examples_seen": state.examples_seen,
        "tokens_seen": state.tokens_seen,
        "elapsed_s": time.perf_counter() - started,
    }


# -- manifests and the final model ---------------------------------------------------------------
def write_manifest(ctx: RunContext, state: ckpt.TrainerState, checkpoint: str,
                   metrics: dict | None) -> RunManifest:
    ts = ctx.training_set
    created = datetime.now(UTC)
    previous = ctx.out / "manifest.json"
    if previous.exists():  # the run's start, kept across checkpoints and resumes
        created = read_json_model(previous, RunManifest).created_at
    manifest = RunManifest(
        run_id=ctx.run_key[:16], created_at=created, stage=ctx.config.stage,
        dataset_version=ts.version, dataset_path=str(ts.path.resolve()),
        parent_checkpoint=str(Path(ctx.init or ctx.config.init).resolve())
        if (ctx.init or ctx.config.init) else None,
        config=ctx.config.model_dump(mode="json"), config_hash=ctx.config.hash(),
        recipe_hash=recipe_hash(ctx.config),
        steps=state.step, examples_seen=state.examples_seen, final_loss=state.last_loss,
        checkpoint_path=checkpoint,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
    )
    write_json_atomic(ctx.out / "manifest.json", manifest)
    return manifest


def finish(ctx: RunContext, model: SiQVLForConditionalGeneration, processor: SiQVLProcessor,
           state: ckpt.TrainerState) -> RunManifest:
    """Save RUN/final (LoRA merged; adapter kept beside it) and the final RunManifest."""
    runtime = ctx.runtime
    runtime.barrier()
    if ctx.fsdp:
        model = unsharded_copy(model, ckpt.full_model_state(model, fsdp=True), ctx.config,
                               runtime.is_main)
    manifest = None
    if runtime.is_main:
        def write(folder: Path) -> None:
            if has_lora(model):
                save_adapter(model, folder / "adapter")
                merge_lora(model)
            save_student(model, processor, folder)

        ckpt.save_final(ctx.out, write)
        records = [r for r in _read_metrics(ctx.out)]
        summary = {"tokens_per_s": float(np.mean([r["tokens_per_s"] for r in records]))
                   if records else 0.0,
                   "examples_per_s": float(np.mean([r["examples_per_s"] for r in records]))
                   if records else 0.0,
                   "padding_after_bucketing": ctx.layers.padding_after_bucketing,
                   "packing": float(ctx.layers.packing), "compile": float(ctx.layers.compile),
                   "bf16": float(ctx.layers.bf16)}
        manifest = write_manifest(ctx, state, "final", summary)
    runtime.barrier()
    return manifest or read_json_model(ctx.out / "manifest.json", RunManifest)


def unsharded_copy(model: SiQVLForConditionalGeneration, state: dict | None,
                   config: TrainConfig, is_main: bool) -> SiQVLForConditionalGeneration:
    """An ordinary (unsharded, CPU) student holding an FSDP model's gathered weights; only
    the main process builds it (``state`` is None elsewhere)."""
    if not is_main:
        return model
    copy = SiQVLForConditionalGeneration(model.config)
    if has_lora(model):
        apply_lora(copy, config.lora)
    copy.load_state_dict(state)
    return copy


def _read_metrics(out: Path) -> list[dict]:
    from distill.train.metrics import read_metrics

    return read_metrics(out / "metrics.jsonl")
