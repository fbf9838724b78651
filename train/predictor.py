"""A SiQ-VL checkpoint of ours: located from a run folder or a checkpoint folder, checked
to be a SiQ-VL model (a clear error for a checkpoint of another model), and run through
the train package's batched greedy generation (left padding, KV cache)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from distill.core.model_folders import locate_student
from distill.core.predictors import (
    Generation,
    Mode,
    PredictorOptions,
    load_sample_image,
    mode_prompt,
    model_fingerprint,
)
from distill.core.shards import read_json_model
from distill.schemas import ModelRef, RunManifest, Sample


def locate_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, its run's manifest.json or None) for a run or checkpoint path
    (``distill.core.model_folders.locate_student``: a teacher set finds students the same
    way)."""
    return locate_student(path)


class SiqvlPredictor:
    """The student, asked exactly as it was trained (the train package builds the prompt)."""

    def __init__(self, path: Path, options: PredictorOptions) -> None:
        self.checkpoint, self.run_manifest_path = locate_checkpoint(path)
        self.options = options

    @cached_property
    def model_ref(self) -> ModelRef:
        if self.run_manifest_path is not None:  # a clear error now, not in lineage later
            read_json_model(self.run_manifest_path, RunManifest)
        # Named by the run folder people chose ("runs/student-a" -> "student-a/final").
        return ModelRef(kind="siqvl", name=f"{self.checkpoint.parent.name}/{self.checkpoint.name}",
                        path=str(self.checkpoint),
                        run_manifest=str(self.run_manifest_path) if self.run_manifest_path
                        else None,
                        fingerprint=model_fingerprint(self.checkpoint))

    def generation_config(self, mode: Mode) -> dict[str, JsonValue]:
        # The student's prompt is built by its processor from prompts/<mode>.yaml and the
        # processor settings saved in the checkpoint (covered by the fingerprint).
        prompt = mode_prompt(mode)
        return {"mode": mode, "prompt_id": prompt.id, "prompt_hash": prompt.hash,
                "decoding": "greedy", "max_new_tokens": self.options.max_new_tokens,
                "dtype": str(self.dtype).removeprefix("torch.")}

    @cached_property
    def device(self) -> str:
        import torch

        return self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")

    @cached_property
    def dtype(self) -> Any:
        import torch

        if self.options.dtype == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return getattr(torch, self.options.dtype)

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        from distill.train.siqvl.build import load_student

        model, processor = load_student(self.checkpoint, dtype=self.dtype)
        model.to(self.device).eval()
        return model, processor

    def predict(self, samples: Sequence[Sample], image_root: Path | None,
                mode: Mode) -> list[Generation]:
        from distill.train.inference import generate_answers

        for sample in samples:  # fail on a bad image with the sample's name, before the GPU
            load_sample_image(sample, image_root)
        model, processor = self._loaded
        started = time.perf_counter()
        outputs = generate_answers(model, processor, list(samples), image_root, mode=mode,
                                   max_new_tokens=self.options.max_new_tokens,
                                   batch_size=self.options.batch_size)
        share = (time.perf_counter() - started) / max(1, len(samples))
        return [Generation(text=text, output_tokens=tokens, latency_s=share,
                           finish_reason="length" if tokens >= self.options.max_new_tokens
                           else "stop")
                for text, tokens in outputs]

    def close(self) -> None:
        self.__dict__.pop("_loaded", None)


def siqvl_predictor(path: str, options: PredictorOptions) -> SiqvlPredictor:
    """``siqvl:PATH`` (the predictor registry's entry for kind ``siqvl``)."""
    return SiqvlPredictor(Path(path), options)
