"""The training loop: one process or many (torchrun), five switchable speed layers.

1. precision: weights loaded in bf16 on a GPU (not only autocast); every trained
   parameter keeps an fp32 master copy (a fully trained LLM runs under bf16 autocast);
   the vision tower runs under ``no_grad``; TF32 matmuls; fused AdamW on CUDA.
2. batching: length bucketing (``distill.train.batching.epoch_plan``), micro-batches cut by a token
   budget, widths rounded up to a multiple of 64 on a GPU (a small, fixed set of shapes).
3. kernel fusion: the loss through the LM head never materializes all logits (chunked
   torch kernel, or Liger's fused one); Liger's RMSNorm/SwiGLU when installed;
   ``torch.compile`` of the LLM backbone only when asked.
4. packing: examples concatenated with per-example position ids and per-document
   attention (``distill.train.attention``: PyTorch's varlen flash kernel on a GPU, one SDPA call
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
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from distill.core.errors import DistillError, InputError
from distill.core.locks import Lease, lock_path_for, no_writer, writer_lease
from distill.core.paths import relative_to
from distill.core.progress import progress_bar
from distill.core.shards import read_json_model
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
from distill.train.manifest import (
    RunIdentity,
    check_same_run,
    save_run_checkpoint,
    write_run_manifest,
)
from distill.train.metrics import MetricsLog, MetricsWindow, memory_gb, read_metrics
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
from distill.train.siqvl.student_processor import StudentProcessor

log = logging.getLogger(__name__)


class TrainingDivergedError(DistillError):
    """The loss or the gradient became NaN/inf: the run stops instead of wasting compute."""


# Steps one run may plan (each planned step is a small object in memory): far beyond any
# run this loop is for, and a typo (max_steps=1e12, epochs=1e9) is refused, not planned.
MAX_STEPS = 10_000_000


def still_writer() -> None:
    """The lock check of a process that holds no lock of its own (ranks > 0, benches)."""


# -- model -----------------------------------------------------------------------------------
def prepare_model(config: TrainConfig, runtime: Runtime, init: str | None
                  ) -> tuple[SiQVLForConditionalGeneration, StudentProcessor]:
    """Load or build the student, freeze what this stage does not train, move to device.
    A folder or spec that does not load is named by the option that gave it."""
    source = "--init" if init else "field 'init'"
    init = init or config.init
    if init:
        with named_by(source):
            model, processor = load_student(init, dtype=runtime.dtype)
        if config.vision_path:
            with named_by("field 'vision_path'"):
                tower = load_vision_tower(Path(config.vision_path), runtime.dtype)
                model.vision_tower.load_state_dict(tower.state_dict())
    else:
        with named_by("field 'model'"):
            spec = load_model_spec(config.model)
        if config.vision_path:
            spec.vision, spec.vision_path = None, config.vision_path
        with named_by("field 'vision_path'" if config.vision_path else "field 'model'"):
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


@contextmanager
def named_by(option: str) -> Iterator[None]:
    """A model that does not load (or a tower whose shapes do not fit the student) is
    reported as the fault of the option that named it."""
    try:
        yield
    except DistillError as exc:
        raise DistillError(f"{option}: {exc}") from None
    except RuntimeError as exc:  # load_state_dict: weights of other shapes
        raise DistillError(f"{option}: does not fit this student "
                           f"({' '.join(str(exc).split())[:200]})") from None


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
        epoch, index = divmod(step + config.data_start, per_epoch)
        if epoch not in cached:
            cached = {epoch: epoch_plan(dataset.lengths, config.batch_size, config.seed, epoch,
                                        bucketing=config.bucketing, window=config.bucket_window)}
        batch = cached[epoch][index]
        micros = split.split(batch, dataset.lengths)
        plans.append(StepPlan(step, epoch, index, micros[runtime.rank::runtime.world_size],
                              int(dataset.lengths[batch].sum()),
                              int(dataset.label_counts[batch].sum()), len(batch)))
    return plans


# -- setup: everything a run needs before its first step -------------------------------------
def _micro_batch_size(config: TrainConfig, runtime: Runtime) -> int:
    micro = config.micro_batch_size or config.batch_size // runtime.world_size
    n_micro = config.batch_size // max(micro, 1)
    if micro < 1 or config.batch_size % micro or n_micro % runtime.world_size:
        raise DistillError(
            f"batch_size {config.batch_size} must split into micro-batches of "
            f"{micro} examples, a multiple of {runtime.world_size} process(es) of them")
    return micro


def train(config: TrainConfig, data: str | Path, out: str | Path, *, resume: bool = False,
          init: str | None = None, wait: bool = False, in_group: bool = False
          ) -> RunManifest:
    """Run (or resume) one training stage; returns the RunManifest written to OUT.

    One run per OUT: the first process of a run (rank 0) holds OUT's single-writer lock
    before it reads or writes anything there, and checks it still does before each write;
    another run there stops naming it, or waits for it with ``wait``. With ``resume``, a
    finished run of this very recipe is returned as it is (and said so in the log); one
    of another recipe is refused, as an unfinished one is. ``in_group``: a job of the
    ``--seeds`` run that holds OUT's parent (``run_lock``)."""
    with run_lock(out, wait, in_group) as lease:
        confirm = lease.confirm if lease is not None else still_writer
        return _train_stage(config, data, out, resume, init, confirm)


@contextmanager
def run_lock(out: str | Path, wait: bool, in_group: bool = False) -> Iterator[Lease | None]:
    """OUT's single-writer lock (``distill.core.locks``), yielding its Lease; nothing on
    ranks > 0 (yielding None), whose run's rank 0 holds it.

    A seed folder (GROUP/seed-N) belongs to the ``--seeds`` run that holds GROUP, before
    its job for that seed has started: a run there from outside the group (``in_group``
    False) keeps GROUP's lock from being taken (``no_writer``) until it holds its own, so
    runs in sibling seed folders (the demo's) never exclude each other."""
    if os.environ.get("RANK", "0") != "0":  # the ranks of one run share its folder
        yield None
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        with ExitStack() as group:
            if not in_group and ckpt.SEED_RUN_RE.match(out.name):
                group.enter_context(no_writer(lock_path_for(out.parent),
                                              f"training run {out.parent}", wait=wait))
            lease = held.enter_context(writer_lease(lock_path_for(out),
                                                    f"training run {out}", wait=wait))
        yield lease


def _train_stage(config: TrainConfig, data: str | Path, out: str | Path, resume: bool,
                 init: str | None, confirm: Callable[[], None]) -> RunManifest:
    out = Path(out)
    ckpt.check_run_folder(out, resume)
    if config.stage == "vision":
        from distill.train.vision_pretrain import pretrain_vision

        return pretrain_vision(config, out, resume=resume, confirm=confirm)
    runtime = setup_runtime(config)
    try:
        return _train(config, Path(data), out, runtime, resume, init, confirm)
    finally:
        teardown_runtime(runtime)


def _train(config: TrainConfig, data: Path, out: Path, runtime: Runtime, resume: bool,
           init: str | None, confirm: Callable[[], None] = still_writer) -> RunManifest:
    """Setup, the steps (with their checkpoints), then the final model and manifest."""
    training_set = load_training_set(data, config.target, config.split)
    if resume:
        manifest = check_same_run(out, run_identity(config, training_set, init, out))
        if manifest is not None and ckpt.is_finished(out):
            log.warning("%s is already finished (%d steps, model in %s): nothing to train",
                        out, manifest.steps, out / ckpt.FINAL)
            return manifest
    context, parts, state, resumed = prepare_run(config, data, out, runtime, resume, init,
                                                 training_set=training_set, confirm=confirm)
    confirm()
    metrics = MetricsLog(out / "metrics.jsonl", enabled=runtime.is_main,
                         tensorboard=config.tensorboard,
                         resume_step=state.step if resumed else None)
    if runtime.is_main and not resumed:
        write_run_manifest(out, context.identity, state, "none")
    try:
        state = run_steps(context, parts, state, metrics)
    finally:
        metrics.close()
    return finish(context, parts.model, parts.processor, state)


def prepare_run(config: TrainConfig, data: Path, out: Path, runtime: Runtime, resume: bool,
                init: str | None, encoded: EncodedDataset | None = None, *,
                training_set: TrainingSet | None = None,
                confirm: Callable[[], None] = still_writer
                ) -> tuple[RunContext, TrainingParts, ckpt.TrainerState, bool]:
    """Everything a run needs before its first step: the student with its layers applied,
    the encoded data, the optimizer, and the state (from the newest checkpoint that holds
    up when resuming; the last value says whether one was loaded). ``encoded``: data
    already encoded by the same tokenizer (benchmarks reuse it across configs);
    ``training_set``: ``data`` already loaded; ``confirm``: the run's lock check."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    training_set = training_set or load_training_set(data, config.target, config.split)
    model, processor = prepare_model(config, runtime, init)
    dataset = encoded or encode_dataset(training_set, processor, config)
    micro = _micro_batch_size(config, runtime)
    layers = resolve_layers(config, runtime, dataset, micro)
    apply_kernel_layers(model, layers)
    total = total_steps(config, len(dataset))
    fsdp = runtime.distributed and config.strategy == "fsdp"
    engine = wrap_distributed(model, config, runtime) if runtime.distributed else model
    optimizer, scheduler, _ = make_optimizer(model, config, runtime, total)
    data_key = run_key(config, training_set, init)
    parts = TrainingParts(model, engine, processor, dataset, optimizer, scheduler)
    saved = parts.checkpoint_state(ckpt.TrainerState.start(data_key), fsdp)
    latest = ckpt.resume_latest(out, saved, runtime, total) if resume else None
    if latest is not None:
        log.warning("resuming %s from step %d", out, saved.progress.step)
    out.mkdir(parents=True, exist_ok=True)
    context = RunContext(config, runtime, training_set, out, init, data_key, layers, total,
                         micro, fsdp, confirm)
    return context, parts, saved.progress, latest is not None


def total_steps(config: TrainConfig, examples: int) -> int:
    """The run's length: ``max_steps``, else ``epochs`` over the usable examples."""
    per_epoch = examples // config.batch_size
    total = config.max_steps or max(1, math.ceil((config.epochs or 1) * per_epoch))
    if total > MAX_STEPS:
        field = "max_steps" if config.max_steps else "epochs"
        raise InputError(f"makes a run of {total:,} steps; at most {MAX_STEPS:,} are planned "
                         f"in one run", field=field, reason="bad_config")
    return total


def run_key(config: TrainConfig, training_set: TrainingSet, init: str | None) -> str:
    """What a run computes: its config (speed settings aside), its data's manifest and
    its start. A checkpoint resumes only into the run of the same key."""
    return content_hash({"config": outcome_hash(config), "data": training_set.manifest_sha256,
                         "init": str(init or config.init or "")})


def run_identity(config: TrainConfig, training_set: TrainingSet, init: str | None,
                 run: Path) -> RunIdentity:
    """What the run's manifest says about it at every checkpoint. Its paths are relative
    to the run's folder, where the manifest lies: lineage follows them in a project moved
    as a whole."""
    parent = init or config.init
    return RunIdentity(
        run_id=run_key(config, training_set, init)[:16], config=config,
        dataset_version=training_set.version,
        dataset_path=relative_to(training_set.path, run),
        parent_checkpoint=relative_to(parent, run) if parent else None,
        recipe_hash=recipe_hash(config))


def encode_dataset(training_set: TrainingSet, processor: StudentProcessor,
                   config: TrainConfig) -> EncodedDataset:
    cache = config.cache_images if config.cache_images != "auto" else (
        len(training_set.items) * 3 * processor.settings.image_size ** 2 < 2**30)
    dataset = EncodedDataset(training_set.items, processor, config.max_length, bool(cache))
    if dataset.dropped:
        log.warning("dropped %d example(s) longer than max_length=%d", dataset.dropped,
                    config.max_length)
    if len(dataset) < config.batch_size:
        dropped = (f", {dataset.dropped} longer than max_length={config.max_length} left out"
                   if dataset.dropped else "")
        raise DistillError(f"{len(dataset)} usable example(s){dropped} is fewer than one "
                           f"batch (batch_size {config.batch_size})")
    return dataset


@dataclass
class RunContext:
    """What a run is, fixed for its whole length: config, where it runs, its data and
    folder, its layers and length."""

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
    # Raises once this run no longer holds OUT's lock; called before each write.
    confirm: Callable[[], None] = still_writer

    @property
    def identity(self) -> RunIdentity:
        """What the run's manifest says about it at every checkpoint."""
        return run_identity(self.config, self.training_set, self.init, self.out)


@dataclass
class TrainingParts:
    """The live objects of a run: the student (and its DDP/FSDP wrapper, ``engine``, which
    runs the forward pass), its processor, the encoded data, the optimizer and schedule."""

    model: SiQVLForConditionalGeneration
    engine: torch.nn.Module
    processor: StudentProcessor
    dataset: EncodedDataset
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def checkpoint_state(self, progress: ckpt.TrainerState, fsdp: bool
                         ) -> ckpt.CheckpointState:
        return ckpt.CheckpointState(self.model, self.optimizer, self.scheduler, progress, fsdp)


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


# -- the steps ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepResult:
    loss: float  # mean token loss over the whole global batch
    grad_norm: float
    padded_tokens: int  # tokens this process ran, padding included


def run_steps(ctx: RunContext, parts: TrainingParts, state: ckpt.TrainerState,
              metrics: MetricsLog) -> ckpt.TrainerState:
    """The remaining steps from ``state``: each logged every ``log_every`` steps and
    checkpointed every ``save_every``; returns the state after the last one."""
    config, runtime = ctx.config, ctx.runtime
    plans = plan_steps(parts.dataset, config, runtime, ctx.layers.split, state.step,
                       ctx.total_steps)
    batches = iter(make_loader(parts, plans, ctx.layers))
    trainable = [p for p in parts.model.parameters() if p.requires_grad]
    window = MetricsWindow()
    started = time.perf_counter()
    # Named after the run folder: several runs of one stage (the demo's students) stay apart.
    with progress_bar(f"train {ctx.out.name}", total=ctx.total_steps, unit="steps") as bar:
        bar.advance(state.step)
        for plan in plans:
            t0 = time.perf_counter()
            result = train_step(ctx, parts, plan, batches, trainable)
            window.add(tokens=plan.real_tokens, examples=plan.examples,
                       seconds=time.perf_counter() - t0,
                       padded_tokens=result.padded_tokens * runtime.world_size,
                       loss=result.loss)
            state = advanced(state, plan, result.loss)
            bar.advance()
            if state.step % config.log_every == 0 or state.step == ctx.total_steps:
                ctx.confirm()
                record = window.record(state, lr=parts.scheduler.get_last_lr()[0],
                                       grad_norm=result.grad_norm,
                                       memory=memory_gb(runtime.device),
                                       elapsed_s=time.perf_counter() - started)
                metrics.log(record)
                bar.note(f"loss {record['loss']:.4f}  {record['tokens_per_s']:,.0f} tok/s  "
                         f"{record['memory_gb']:.2f} GB")
                window = MetricsWindow()
            if ckpt.is_due(state.step, config.save_every, ctx.total_steps):
                ctx.confirm()
                save_run_checkpoint(ctx.out, parts.checkpoint_state(state, ctx.fsdp), runtime,
                                    ctx.identity)
    return state


def make_loader(parts: TrainingParts, plans: list[StepPlan], layers: Layers) -> DataLoader:
    return DataLoader(MicroBatches(parts.dataset, plans, layers, parts.processor.pad_token_id),
                      batch_size=None, shuffle=False, num_workers=layers.num_workers,
                      pin_memory=layers.pin_memory, persistent_workers=False,
                      prefetch_factor=4 if layers.num_workers else None)


def advanced(state: ckpt.TrainerState, plan: StepPlan, loss: float) -> ckpt.TrainerState:
    """The run's state once ``plan``'s step is done."""
    return ckpt.TrainerState(plan.step + 1, plan.epoch, plan.batch_in_epoch + 1,
                             state.examples_seen + plan.examples,
                             state.tokens_seen + plan.real_tokens, state.outcome_hash, loss)


def train_step(ctx: RunContext, parts: TrainingParts, plan: StepPlan, batches,
               trainable: list[torch.Tensor]) -> StepResult:
    """One optimizer step over the global batch of ``plan`` (this process's micro-batches,
    gradients reduced across processes); stops the run on a NaN/inf loss or gradient."""
    loss, padded = forward_backward(ctx, parts, plan, batches)
    grad_norm = clip_gradients(parts.model, trainable, ctx.config.grad_clip)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise diverged(ctx, plan.step, loss, grad_norm, parts.scheduler)
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, grad_norm, padded)


def forward_backward(ctx: RunContext, parts: TrainingParts, plan: StepPlan, batches
                     ) -> tuple[float, int]:
    """Gradients of the global batch's mean token loss; returns that loss (summed over every
    process) and the tokens this process ran, padding included."""
    runtime = ctx.runtime
    loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float32)
    padded = 0
    scale = runtime.world_size / max(plan.label_tokens, 1)
    for k in range(len(plan.micro)):
        batch: Batch = next(batches).to(runtime.device, non_blocking=True)
        padded += batch.padded_tokens
        with gradient_sync(ctx, parts.engine, last=k == len(plan.micro) - 1):
            output = micro_batch_forward(ctx, parts, batch)
            (output.loss_sum * scale).backward()
        loss_sum += output.loss_sum.detach().float()
    return runtime.all_reduce_sum(loss_sum).item() / max(plan.label_tokens, 1), padded


def gradient_sync(ctx: RunContext, engine: torch.nn.Module, last: bool
                  ) -> AbstractContextManager:
    """Across processes, gradients are reduced once per step, after its last micro-batch."""
    if ctx.runtime.distributed and not last and hasattr(engine, "no_sync"):
        return engine.no_sync()  # DDP
    if ctx.fsdp:
        engine.set_requires_gradient_sync(last)
    return nullcontext()


def micro_batch_forward(ctx: RunContext, parts: TrainingParts, batch: Batch):
    runtime, layers = ctx.runtime, ctx.layers
    with torch.autocast(runtime.device.type, torch.bfloat16, enabled=layers.autocast):
        return parts.engine(input_ids=batch.input_ids,
                            pixel_values=parts.processor.normalize(batch.pixel_values,
                                                                   runtime.dtype),
                            position_ids=batch.position_ids, labels=batch.labels,
                            use_cache=False, **attention_kwargs(batch, layers))


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


# -- cleanup: the final model and manifest -----------------------------------------------------
def finish(ctx: RunContext, model: SiQVLForConditionalGeneration, processor: StudentProcessor,
           state: ckpt.TrainerState) -> RunManifest:
    """Save RUN/final (LoRA merged; adapter kept beside it) and the final RunManifest."""
    runtime = ctx.runtime
    runtime.barrier()
    if ctx.fsdp:
        model = unsharded_copy(model, ckpt.full_model_state(model, fsdp=True), ctx.config,
                               runtime.is_main)
    manifest = None
    if runtime.is_main:
        ctx.confirm()

        def write(folder: Path) -> None:
            if has_lora(model):
                save_adapter(model, folder / "adapter")
                merge_lora(model)
            save_student(model, processor, folder)

        ckpt.save_final(ctx.out, write)
        ctx.confirm()
        manifest = write_run_manifest(ctx.out, ctx.identity, state, "final", run_summary(ctx))
    runtime.barrier()
    return manifest or read_json_model(ctx.out / "manifest.json", RunManifest)


def run_summary(ctx: RunContext) -> dict[str, float]:
    """The final manifest's metrics: mean speed over the logged records, the layers used."""
    records = read_metrics(ctx.out / "metrics.jsonl")

    def mean(key: str) -> float:
        values = [r[key] for r in records if isinstance(r.get(key), int | float)]
        return float(np.mean(values)) if values else 0.0

    return {"tokens_per_s": mean("tokens_per_s"), "examples_per_s": mean("examples_per_s"),
            "padding_after_bucketing": ctx.layers.padding_after_bucketing,
            "packing": float(ctx.layers.packing), "compile": float(ctx.layers.compile),
            "bf16": float(ctx.layers.bf16)}


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
