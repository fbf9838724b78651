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

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from distill.core.digits import GRID, digit_images, render, source_pools
from distill.core.errors import DistillError
from distill.core.progress import console, progress_bar
from distill.core.shards import write_json_atomic
from distill.schemas import RunManifest, content_hash
from distill.train.checkpoint import is_finished, save_final
from distill.train.config import TrainConfig
from distill.train.runtime import default_threads
from distill.train.schedule import lr_factor
from distill.train.siqvl.build import load_model_spec
from distill.train.siqvl.modeling import patchify
from distill.train.siqvl.projector import pixel_shuffle

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


def pretrain_vision(config: TrainConfig, out: Path, *, resume: bool = False) -> RunManifest:
    """Train and save the tower to OUT/final; a finished run is not redone."""
    if is_finished(out):
        if not resume:
            raise DistillError(f"{out} already holds a finished vision run; pass --resume to "
                               "reuse it or choose another --out")
        from distill.core.shards import read_json_model

        return read_json_model(out / "manifest.json", RunManifest)
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
    train_images, train_labels = digit_images(pools["train"])
    val_images, val_labels = digit_images(pools["val"])
    steps = config.vision_steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, steps, min_ratio=0.0))
    started = time.perf_counter()
    loss_value = float("nan")
    model.train()
    with progress_bar("pretrain vision tower", total=steps, unit="steps") as bar:
        for step in range(steps):
            rng = np.random.default_rng([config.seed, step, 15485863])
            pixels, labels = composite_batch(train_images, train_labels,
                                             config.vision_batch_size, rng, spec.image_size)
            logits = model(pixels)
            loss = nn.functional.cross_entropy(logits.reshape(-1, BLANK + 1), labels.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            bar.advance()
            if step % 50 == 0:
                bar.note(f"loss {loss_value:.4f}")
    seconds = time.perf_counter() - started
    accuracy = cell_accuracy(model, val_images, val_labels, config.seed, spec.image_size)
    console.print(f"vision tower: cell accuracy on the val pool {accuracy:.3f} "
                  f"({steps} steps, {seconds:.0f}s)")
    save_final(out, tower.save_pretrained)
    manifest = RunManifest(
        run_id=config.hash()[:16], created_at=datetime.now(UTC), stage="vision",
        dataset_version=None, dataset_path=f"embedded:digits/source_pools({config.seed})[train]",
        parent_checkpoint=None, config=config.model_dump(mode="json"),
        config_hash=config.hash(), steps=steps, examples_seen=steps * config.vision_batch_size,
        final_loss=loss_value, checkpoint_path="final",
        metrics={"val_cell_accuracy": accuracy, "seconds": seconds,
                 "model_spec_hash": float(int(content_hash(spec.vision)[:8], 16))})
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


@torch.no_grad()
def cell_accuracy(model: CellClassifier, images: np.ndarray, labels: np.ndarray, seed: int,
                  image_size: int, n: int = 512) -> float:
    """Share of cells (digit or blank) classified right on composites of held-out scans."""
    model.eval()
    rng = np.random.default_rng([seed, 999331])
    pixels, truth = composite_batch(images, labels, n, rng, image_size)
    predicted = model(pixels).argmax(-1)
    return float((predicted == truth).float().mean())
