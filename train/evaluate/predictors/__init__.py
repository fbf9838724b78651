"""Predictors: the models eval can score, behind one interface (see ``base.Predictor``).

A model is named by a spec: ``siqvl:PATH`` (a SiQ-VL run folder or checkpoint),
``hf:PATH`` (a local transformers image-text-to-text model folder) or ``engine:SPEC``
(an engine of the generate stage). A bare PATH is a SiQ-VL checkpoint when its
config.json says ``model_type: siqvl`` (or it is a run folder), else an hf model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError, InputError
from train.evaluate.predictors.base import (
    MODES,
    Generation,
    Mode,
    Predictor,
    model_fingerprint,
    model_key,
)
from train.model_folders import SIQVL_MODEL_TYPE, read_model_type

KINDS = ("siqvl", "hf", "engine")

__all__ = ["MODES", "Generation", "Mode", "PredictorOptions", "Predictor", "load_predictor",
           "model_fingerprint", "model_key", "parse_model_spec"]


@dataclass(frozen=True)
class PredictorOptions:
    batch_size: int = 8
    max_new_tokens: int = 512
    dtype: str = "auto"
    device: str | None = None
    prompt: str | None = None
    engine_options: tuple[tuple[str, object], ...] = ()


def parse_model_spec(spec: str) -> tuple[str, str]:
    """'hf:models/x' -> ('hf', 'models/x'); a bare path is told apart by its files."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        if not rest:
            raise DistillError(f"--model {spec!r}: nothing after '{kind}:'")
        return kind, rest
    path = Path(spec)
    if not path.exists():
        raise InputError(f"model not found (use one of {[k + ':PATH' for k in KINDS]})",
                         file=spec, reason="missing_file")
    if (path / "manifest.json").is_file() and not (path / "config.json").is_file():
        return "siqvl", spec
    return ("siqvl" if read_model_type(path) == SIQVL_MODEL_TYPE else "hf"), spec


def load_predictor(spec: str, options: PredictorOptions) -> Predictor:
    kind, target = parse_model_spec(spec)
    if kind == "hf":
        from train.evaluate.predictors.engine import EnginePredictor

        return EnginePredictor.local_hf(Path(target), options)
    if kind == "siqvl":
        from train.evaluate.predictors.siqvl import SiqvlPredictor

        return SiqvlPredictor(Path(target), options)
    from train.evaluate.predictors.engine import EnginePredictor

    return EnginePredictor(target, options)
