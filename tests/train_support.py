"""Shared builders for the training tests: real digits data, real tiny students."""

from __future__ import annotations

from pathlib import Path

import torch

from distill.ingest.pipeline import IngestOptions, ingest
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.train.batching import Example
from distill.train.config import TrainConfig
from distill.train.siqvl.build import build_student, load_model_spec
from distill.train.siqvl.modeling import IGNORE_INDEX
from testing.train_fixtures import write_dataset_version

MICRO = "test-micro"


def make_ingest(folder: Path, train: int = 48, test: int = 8) -> Path:
    config = DigitsConfig(seed=0, counts={"train": train, "test": test})
    ingest(iter_digits(config), IngestOptions(out=folder))
    return folder


def make_dataset(ingest_dir: Path, folder: Path, limit: int | None = None) -> Path:
    return write_dataset_version(ingest_dir, folder, limit=limit)


def micro_student(seed: int = 0):
    torch.manual_seed(seed)
    return build_student(load_model_spec(MICRO), seed=seed)


def random_examples(processor, lengths: list[int], seed: int = 0,
                    unlabelled_share: int = 2) -> list[Example]:
    """Examples of 4 image tokens then ``n`` random text tokens each; the first
    ``5 + n // unlabelled_share`` tokens (the prompt) are not targets."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        text = torch.randint(10, 400, (n,), generator=g)
        ids = torch.cat([torch.tensor([1] + [processor.image_token_id] * 4), text])
        labels = ids.clone()
        labels[: 5 + n // unlabelled_share] = IGNORE_INDEX
        image = torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8)
        out.append(Example(ids, labels, image))
    return out


def config(**fields) -> TrainConfig:
    """A fast CPU config on the micro student; fields override."""
    base = dict(stage="cot", model=MICRO, target="cot", llm="full", max_steps=4, batch_size=4,
                lr=1e-3, warmup_steps=1, save_every=1000, log_every=1, threads=1,
                tensorboard=False)
    base.update(fields)
    return TrainConfig(**base)


def tiny_trained_student(root: Path) -> dict[str, Path]:
    """A tiny student trained for 30 steps on 8 digits items (seconds on one CPU thread),
    with its ingest folder (8 test items): {"root", "ingest", "run"}."""
    from distill.train.loop import train

    ingest_dir = make_ingest(root / "ingest", train=24, test=8)
    dataset = make_dataset(ingest_dir, root / "version", limit=8)
    train(config(max_steps=30, batch_size=8, lr=5e-3, warmup_steps=3), dataset, root / "run")
    return {"root": root, "ingest": ingest_dir, "run": root / "run"}
