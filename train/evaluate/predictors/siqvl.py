"""A SiQ-VL checkpoint of ours: located from a run folder or a checkpoint folder, checked
to be a SiQ-VL model (a clear error for a checkpoint of another model), and run through
the train package's batched greedy generation (left padding, KV cache)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import JsonValue

from distill.errors import InputError
from distill.shards import read_json_model
from schemas import ModelRef, RunManifest, Sample
from train.evaluate.predictors.base import Generation, Mode, model_fingerprint
from train.evaluate.predictors.hf import read_model_type

if TYPE_CHECKING:
    from train.evaluate.predictors import PredictorOptions

SIQVL_MODEL_TYPE = "siqvl"


def locate_checkpoint(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint folder, its run's manifest.json or None) for a run or checkpoint path.

    A run folder (``RUN/manifest.json``) means its ``final/`` checkpoint.
    """
    path = path.resolve()
    if not path.exists():
        raise InputError("SiQ-VL checkpoint not found", file=path, reason="missing_file")
    if (path / "manifest.json").is_file() and not (path / "config.json").is_file():
        final = path / "final"
        if not final.is_dir():
            others = sorted(p.name for p in path.glob("checkpoint-*") if p.is_dir())
            raise InputError(f"this run has no final/ checkpoint yet; name one of {others} "
                             "explicitly", file=path, reason="missing_file")
        return final, path / "manifest.json"
    model_type = read_model_type(path)
    if model_type != SIQVL_MODEL_TYPE:
        raise InputError(f"this is a '{model_type}' checkpoint, not a SiQ-VL checkpoint "
                         f"(model_type '{SIQVL_MODEL_TYPE}'); evaluate it with --model "
                         f"hf:{path}", file=path / "config.json", field="model_type",
                         reason="wrong_model")
    manifest = path.parent / "manifest.json"
    return path, manifest if manifest.is_file() else None


class SiqvlPredictor:
    """The student, asked exactly as it was trained (the train package builds the prompt)."""

    def __init__(self, path: Path, options: PredictorOptions) -> None:
        self.checkpoint, self.run_manifest_path = locate_checkpoint(path)
        if read_model_type(self.checkpoint) != SIQVL_MODEL_TYPE:
            raise InputError(f"this is a '{read_model_type(self.checkpoint)}' checkpoint, not "
                             "a SiQ-VL checkpoint", file=self.checkpoint / "config.json",
                             field="model_type", reason="wrong_model")
        self.options = options

    @cached_property
    def run(self) -> RunManifest | None:
        if self.run_manifest_path is None:
            return None
        return read_json_model(self.run_manifest_path, RunManifest)

    @cached_property
    def model_ref(self) -> ModelRef:
        run_id = self.run.run_id if self.run else self.checkpoint.parent.name
        return ModelRef(kind="siqvl", name=f"{run_id}/{self.checkpoint.name}",
                        path=str(self.checkpoint),
                        run_manifest=str(self.run_manifest_path) if self.run_manifest_path
                        else None,
                        fingerprint=model_fingerprint(self.checkpoint))

    def generation_config(self, mode: Mode) -> dict[str, JsonValue]:
        return {"mode": mode, "decoding": "greedy",
                "max_new_tokens": self.options.max_new_tokens, "dtype": self.options.dtype}

    def predict(self, samples: Sequence[Sample], image_root: Path | None,
                mode: Mode) -> list[Generation]:
        raise NotImplementedError(
            "SiQ-VL generation is wired once train.inference lands on main")

    def close(self) -> None:
        self.__dict__.pop("_loaded", None)
