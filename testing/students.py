"""Trained students for the tests of what leaves the toolkit (the vLLM plugin, the Auto
classes): a folder exactly as ``distill train`` writes it.

``train_student`` runs the real command on a dataset version of oracle rationales
(``testing.train_fixtures``), with LoRA by default so the folder is the merged one that a
LoRA run saves (``RUN/final``, its adapter kept in ``RUN/final/adapter``); ``digits_student``
is one that answers: the tiny digits model trained fully, then a LoRA run on top.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.shards import iter_records
from distill.schemas import Sample
from testing.train_fixtures import write_dataset_version


def train_student(out: Path, samples_dir: Path, *, model: str = "test-micro",
                  llm: str = "lora", steps: int = 6, batch_size: int = 4,
                  lr: float | None = None, init: Path | None = None) -> Path:
    """``RUN/final`` of a short ``distill train --config cot`` run on ``samples_dir``'s
    train split (from ``init``'s model when given)."""
    from distill.cli import main

    dataset = write_dataset_version(samples_dir, out / "dataset")
    run = out / "run"
    settings = {"model": model, "llm": llm, "max_steps": steps, "batch_size": batch_size,
                "warmup_steps": 1, "save_every": 10_000, "log_every": 10_000,
                "tensorboard": "false", **({"lr": lr} if lr is not None else {})}
    args = ["train", "--config", "cot", "--data", str(dataset), "--out", str(run)]
    if init is not None:
        args += ["--init", str(init)]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    if main(args) != 0:
        raise RuntimeError(f"distill train failed: {' '.join(args)}")
    return run / "final"


def split_samples(samples_dir: Path, split: str) -> list[Sample]:
    """Every sample of one split of an ingest folder, in file order."""
    return [sample for path in sorted((samples_dir / "samples" / split).glob("part-*.jsonl"))
            for sample in iter_records(path, Sample)]


def served_image_features(pixel_values, model):
    """What a served SiQ-VL model makes of ``pixel_values`` (run in vLLM's worker by
    ``LLM.apply_model(partial(served_image_features, pixel_values))``)."""
    return model.embed_multimodal(pixel_values=pixel_values).cpu()


def digits_student(out: Path, samples_dir: Path) -> Path:
    """A tiny digits student that writes "<reasoning>\nAnswer: N" (150 full steps, ~1 min on
    2 cores), then 10 LoRA steps from it: the merged folder a stage-3 LoRA run saves."""
    base = train_student(out / "base", samples_dir, model="tiny-digits", llm="full",
                         steps=150, batch_size=8, lr=1e-3)
    return train_student(out / "lora", samples_dir, llm="lora", steps=10, batch_size=8,
                         init=base)
