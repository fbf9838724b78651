"""Stage 0: pretrain the tiny vision tower on the digits TRAINING pool.

A tiny SigLIP-2 tower has no pretrained weights to load, so this stands in for a real
SigLIP-2 checkpoint: supervised classification of every cell of 2x2-grid composites (10
digits + blank), drawn only from ``source_pools(seed)["train"]``, rendered exactly like the
embedded data. The head reads the pixel-shuffled cell features, the same grouping the
student's projector sees. The tower is saved as a plain vision model folder, which a
model spec or train config uses as ``vision_path`` (frozen from then on).

Deterministic: images of step s come from ``default_rng([seed, s])`` and the tower's
initialization from the seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from distill.core.digits import GRID, digit_images, render, source_pools
from distill.core.errors import DistillError
from distill.core.progress import console, progress_bar
from distill.schemas import RunManifest, content_hash
from distill.train.checkpoint import (
    CheckpointState,
    TrainerState,
    check_run_folder,
    is_due,
    is_finished,
    resume_latest,
    save_final,
)
from distill.train.config import TrainConfig, outcome_hash
from distill.train.manifest import (
    RunIdentity,
    check_same_run,
    save_run_checkpoint,
    write_run_manifest,
)
from distill.train.runtime import Runtime, default_threads
from distill.train.schedule import lr_factor
from distill.train.siqvl.build import load_model_spec
from distill.train.siqvl.modeling import patchify
from distill.train.siqvl.projector import pixel_shuffle

log = logging.getLogger(__name__)

BLANK = 10


def composite_batch(pool_images: np.ndarray, pool_labels: np.ndarray, batch: int,
                    rng: np.random.Generator, image_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, 3, S, S) normalized images and (batch, 4) cell labels (BLANK if empty)."""
    images, labels = [], []
    cells = GRID * GRID
    for _ in range(batch):
        n = int(rng.integers(1, cells + 1))
        chosen_cells = rng.choice(cells, size=n, replace=False)
        scans = rng.integers(0, len(pool_images), size=n)
        row = np.full(cells, BLANK, dtype=np.int64)
        row[chosen_cells] = pool_labels[scans]
        image = render([(int(c), pool_images[s]) for c, s in zip(chosen_cells, scans,
                                                                   strict=True)])
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size))
        images.append(np.asarray(image, dtype=np.float32))
        labels.append(row)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255.0
    return (pixels - 0.5) / 0.5, torch.from_numpy(np.stack(labels))


class CellClassifier(nn.Module):
    """Tower -> pixel shuffle to one token per grid cell -> 11-way linear head."""

    def __init__(self, tower: nn.Module, patch: int, grid: int) -> None:
        super().__init__()
        self.tower, self.patch, self.factor = tower, patch, grid // GRID
        self.head = nn.Linear(tower.config.hidden_size * self.factor ** 2, BLANK + 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches, shapes = patchify(pixels, self.patch)
        mask = torch.ones(patches.shape[:2], dtype=torch.long)
        hidden = self.tower(pixel_values=patches, pixel_attention_mask=mask,
                            spatial_shapes=shapes).last_hidden_state
        return self.head(pixel_shuffle(hidden, self.factor))  # (batch, 4, 11)


@dataclass
class VisionRun:
    """Stage 0's live objects: the classifier (the tower and its head) in the checkpoint
    state with its optimizer and schedule, the digit pools, and the manifest's identity."""

    config: TrainConfig
    out: Path
    image_size: int
    spec_hash: float  # the tower's config, as a number the manifest's metrics can hold
    tower: nn.Module
    state: CheckpointState
    identity: RunIdentity
    train_pool: tuple[np.ndarray, np.ndarray]
    val_pool: tuple[np.ndarray, np.ndarray]
    runtime: Runtime = field(default_factory=lambda: Runtime(torch.device("cpu"),
                                                             torch.float32))
    # Raises once this run no longer holds OUT's lock (distill.train.loop.train takes it).
    confirm: Callable[[], None] = lambda: None


def pretrain_vision(config: TrainConfig, out: Path, *, resume: bool = False,
                    confirm: Callable[[], None] | None = None) -> RunManifest:
    """Train and save the tower to OUT/final; a finished run of this config is not redone,
    a partial one continues from its newest checkpoint that holds up with ``resume``.
    ``confirm``: the caller's check that it still holds OUT's lock, before each write."""
    if is_finished(out) and not resume:
        raise DistillError(f"{out} already holds a finished vision run; pass --resume to "
                           "reuse it or choose another --out")
    check_run_folder(out, resume)
    run = setup_vision(config, out)
    run.confirm = confirm or run.confirm
    if resume:
        manifest = check_same_run(out, run.identity)
        if manifest is not None and is_finished(out):
            log.warning("%s is already finished (%d steps, tower in %s): nothing to train",
                        out, manifest.steps, out / "final")
            return manifest
    latest = resume_latest(out, run.state, run.runtime, config.vision_steps) if resume \
        else None
    if latest is None:
        out.mkdir(parents=True, exist_ok=True)
        run.confirm()
        write_run_manifest(out, run.identity, run.state.progress, "none")
    started = time.perf_counter()
    run_vision_steps(run)
    return finish_vision(run, time.perf_counter() - started)


def setup_vision(config: TrainConfig, out: Path) -> VisionRun:
    """The tower (initialized from the seed), its head, optimizer and schedule, the pools."""
    spec = load_model_spec(config.model)
    if spec.vision is None or spec.vision.get("model_type") != "siglip2_vision_model":
        raise DistillError("stage 0 pretrains a SigLIP-2 tower given as a config in the model "
                           "spec ('vision:'), not a pretrained path")
    torch.set_num_threads(default_threads() if config.threads == "auto" else int(config.threads))
    torch.manual_seed(config.seed)
    vision_config = AutoConfig.for_model(**spec.vision)
    tower = AutoModel.from_config(vision_config)
    patch = int(vision_config.patch_size)
    grid = spec.image_size // patch
    if grid % GRID:
        raise DistillError(f"the tower's {grid}x{grid} patch grid does not split into the "
                           f"digits' {GRID}x{GRID} cells")
    model = CellClassifier(tower, patch, grid)
    pools = source_pools(config.seed)
    steps = config.vision_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, steps, min_ratio=0.0))
    progress = TrainerState.start(outcome_hash(config))
    identity = RunIdentity(
        run_id=config.hash()[:16], config=config, dataset_version=None,
        dataset_path=f"embedded:digits/source_pools({config.seed})[train]")
    return VisionRun(config, out, spec.image_size, float(int(content_hash(spec.vision)[:8], 16)),
                     tower, CheckpointState(model, optimizer, scheduler, progress), identity,
                     digit_images(pools["train"]), digit_images(pools["val"]))


def run_vision_steps(run: VisionRun) -> None:
    """The remaining steps, checkpointed every ``save_every``; ``run.state.progress`` moves
    on with every step."""
    config, state = run.config, run.state
    state.model.train()
    with progress_bar("pretrain vision tower", total=config.vision_steps, unit="steps") as bar:
        bar.advance(state.progress.step)
        for step in range(state.progress.step, config.vision_steps):
            loss = vision_step(run, step)
            done = state.progress
            state.progress = replace(done, step=step + 1, batch_in_epoch=step + 1,
                                     examples_seen=done.examples_seen + config.vision_batch_size,
                                     last_loss=loss)
            bar.advance()
            if step % 50 == 0:
                bar.note(f"loss {loss:.4f}")
            if is_due(step + 1, config.save_every, config.vision_steps):
                run.confirm()
                save_run_checkpoint(run.out, state, run.runtime, run.identity)


def vision_step(run: VisionRun, step: int) -> float:
    """One optimizer step on a batch of composites drawn for this step alone (so a resumed
    run draws what an uninterrupted one would); returns its loss."""
    state = run.state
    rng = np.random.default_rng([run.config.seed, step, 15485863])
    pixels, labels = composite_batch(*run.train_pool, run.config.vision_batch_size, rng,
                                     run.image_size)
    logits = state.model(pixels)
    loss = nn.functional.cross_entropy(logits.reshape(-1, BLANK + 1), labels.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), 1.0)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    return loss.item()


def finish_vision(run: VisionRun, seconds: float) -> RunManifest:
    """Score the tower on the val pool, save it to OUT/final, write the final manifest."""
    accuracy = cell_accuracy(run.state.model, *run.val_pool, run.config.seed, run.image_size)
    console.print(f"vision tower: cell accuracy on the val pool {accuracy:.3f} "
                  f"({run.config.vision_steps} steps, {seconds:.0f}s)")
    run.confirm()
    save_final(run.out, run.tower.save_pretrained)
    run.confirm()
    return write_run_manifest(run.out, run.identity, run.state.progress, "final",
                              {"val_cell_accuracy": accuracy, "seconds": seconds,
                               "model_spec_hash": run.spec_hash})


@torch.no_grad()
def cell_accuracy(model: CellClassifier, images: np.ndarray, labels: np.ndarray, seed: int,
                  image_size: int, n: int = 512) -> float:
    """Share of cells (digit or blank) classified right on composites of held-out scans."""
    model.eval()
    rng = np.random.default_rng([seed, 999331])
    pixels, truth = composite_batch(images, labels, n, rng, image_size)
    predicted = model(pixels).argmax(-1)
    return float((predicted == truth).float().mean())
