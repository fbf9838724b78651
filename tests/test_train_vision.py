"""Stage 0: the tiny tower learns to read the training pool's digits, deterministically."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill.core.digits import digit_images, source_pools
from distill.core.errors import DistillError
from distill.train.checkpoint import list_checkpoints
from distill.train.config import TrainConfig
from distill.train.siqvl.build import load_model_spec, load_vision_tower
from distill.train.vision_pretrain import BLANK, composite_batch, pretrain_vision

torch.set_num_threads(1)


def _config(**fields) -> TrainConfig:
    base = dict(stage="vision", model="test-micro", lr=3e-3, vision_steps=60,
                vision_batch_size=32, threads=1)
    base.update(fields)
    return TrainConfig(**base)


def test_composites_come_from_the_training_pool_only():
    images, labels = digit_images(source_pools(0)["train"])
    pixels, cells = composite_batch(images, labels, 16, np.random.default_rng(0), 32)
    assert pixels.shape == (16, 3, 32, 32) and cells.shape == (16, 4)
    assert ((cells >= 0) & (cells <= BLANK)).all() and (cells != BLANK).any(1).all()
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0


def test_pretraining_learns_digits_and_is_deterministic_across_a_resume(tmp_path):
    first = pretrain_vision(_config(), tmp_path / "a")
    # the same run checkpointed every 20 steps, its end lost, resumed from step 40
    pretrain_vision(_config(save_every=20), tmp_path / "b")
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint-000020",
                                                                  "checkpoint-000040"]
    shutil.rmtree(tmp_path / "b" / "final")
    with pytest.raises(DistillError, match="pass --resume"):
        pretrain_vision(_config(save_every=20), tmp_path / "b")
    second = pretrain_vision(_config(save_every=20), tmp_path / "b", resume=True)
    assert first.metrics["val_cell_accuracy"] > 0.6  # chance is ~1/11 per digit cell
    a = load_file(str(tmp_path / "a" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second.final_loss == first.final_loss
    assert (second.steps, second.examples_seen) == (first.steps, first.examples_seen)
    assert first.examples_seen == 60 * 32
    tower = load_vision_tower(tmp_path / "a" / "final")
    spec = load_model_spec("test-micro")
    assert tower.config.hidden_size == spec.vision["hidden_size"]
    with pytest.raises(DistillError, match="already holds a finished vision run"):
        pretrain_vision(_config(), tmp_path / "a")
