"""Predictors: the one small interface every evaluated model sits behind, and the registry
that finds them by name.

A predictor turns a batch of Samples and a mode (``cot``: reason, then answer; ``direct``:
the answer only) into raw texts with their token counts and latencies. Scoring, caching
and metrics never look behind it, so a SiQ-VL student, any local transformers
image-text-to-text model and a teacher engine of the generate stage are scored the same way.

A model is named by a spec: ``siqvl:PATH`` (a SiQ-VL run folder or checkpoint),
``hf:PATH`` (a local transformers image-text-to-text model folder) or ``engine:SPEC``
(an engine of the generate stage). A bare PATH is a SiQ-VL checkpoint when its
config.json says ``model_type: siqvl`` (or it is a run folder), else an hf model.

The implementations live with what they run (the student in ``distill.train``, engines in
``distill.generate``) and are imported by name, like engines: the core and the evaluate
stage never import a stage or the student.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from PIL import Image
from pydantic import JsonValue

from distill.core.errors import DistillError, InputError
from distill.core.images import load_image
from distill.core.model_folders import (
    SIQVL_MODEL_TYPE,
    is_run_folder,
    is_student_folder,
    locate_checkpoint,
    read_model_type,
    read_student_format,
)
from distill.core.prompts import STUDENT_KINDS, PromptTemplate, load_prompt
from distill.schemas import ModelRef, Sample, content_hash, file_sha256

Mode = Literal["cot", "direct"]
MODES: tuple[Mode, ...] = ("cot", "direct")
FinishReason = Literal["stop", "length", "other"]

# Files that decide what a checkpoint generates; optimizer and trainer state do not.
_MODEL_FILE_SUFFIXES = {".safetensors", ".bin", ".pt", ".json", ".jinja", ".model", ".txt",
                        ".tiktoken", ".py"}
_NOT_MODEL_FILES = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args",
                    "metrics")


@dataclass(frozen=True)
class Generation:
    """One raw output: the text, how many tokens it took, and why it stopped.

    ``latency_s`` is the item's share of its batch's wall time, so the sum over items is
    the generation wall time and tokens/s is sum(tokens) / sum(latency).
    """

    text: str
    output_tokens: int
    latency_s: float
    finish_reason: FinishReason = "stop"


class Predictor(Protocol):
    """What eval needs from a model."""

    @property
    def model_ref(self) -> ModelRef:
        """What is evaluated, as recorded in the EvalResult (with its fingerprint)."""
        ...

    def generation_config(self, mode: Mode) -> dict[str, JsonValue]:
        """Everything besides the weights that decides the outputs: prompt (id and hash),
        decoding, max new tokens, dtype. Part of the cache key and of the result id."""
        ...

    def predict(self, samples: Sequence[Sample], image_root: Path | None,
                mode: Mode) -> list[Generation]:
        """One Generation per sample, in order. Batches internally as it sees fit."""
        ...

    def close(self) -> None:
        """Release the model (GPU memory, engine processes)."""
        ...


def load_sample_image(sample: Sample, image_root: Path | None) -> Image.Image:
    """The sample's image as RGB; a missing or changed image names the sample."""
    try:
        return load_image(sample.image, image_root)
    except InputError as exc:
        raise InputError(f"sample {sample.id!r}: {exc.message}", file=exc.file, line=exc.line,
                         field=exc.field, reason=exc.reason) from None


DEFAULT_PROMPTS: dict[Mode, str] = {"cot": "cot", "direct": "direct"}


def mode_prompt(mode: Mode, override: str | Path | None = None) -> PromptTemplate:
    """The prompt a mode uses: prompts/cot.yaml or prompts/direct.yaml unless overridden."""
    return load_prompt(override or DEFAULT_PROMPTS[mode])


def model_prompt(mode: Mode, model: str | Path | None = None,
                 override: str | Path | None = None) -> PromptTemplate:
    """The prompt a model is asked with in ``mode``: ``override`` (``--prompt``) if given;
    for a SiQ-VL student (``model`` names its run or checkpoint folder) the prompt it was
    trained with (``student_prompt``), whatever engine serves it; else ``mode_prompt``."""
    if override is None and model is not None and is_student_folder(Path(model)):
        checkpoint, _ = locate_checkpoint(Path(model))
        return student_prompt(checkpoint, mode)
    return mode_prompt(mode, override)


def student_prompt(checkpoint: Path, mode: str) -> PromptTemplate:
    """The prompt file a saved student was trained with for ``mode``, without its system
    text when the student was trained without one: what its engine must send to ask it
    exactly as it learned (the image placeholder is the folder's chat template's job)."""
    trained = read_student_format(checkpoint)
    prompt = load_prompt(trained.prompts[mode], kind=STUDENT_KINDS)
    return prompt if trained.include_system else dataclasses.replace(prompt, system="")


def check_image_text_model(folder: Path) -> str:
    """The model type of a local transformers image-text-to-text model folder, or a clear
    error for anything else (a SiQ-VL checkpoint, a text-only LM, no model at all)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    model_type = read_model_type(folder)
    if model_type == SIQVL_MODEL_TYPE:
        raise InputError(f"this is a SiQ-VL checkpoint; evaluate it with --model "
                         f"siqvl:{folder}", file=folder, reason="wrong_model")
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise InputError(f"a '{model_type}' model is not an image-text-to-text model that "
                         "transformers can load (a text-only LM, or a custom model)",
                         file=folder / "config.json", field="model_type",
                         reason="wrong_model")
    return model_type


def model_fingerprint(folder: Path) -> str:
    """Content hash of the files that decide what a model folder generates: weights,
    configs, tokenizer and chat template (not optimizer state). Moving or copying the
    folder keeps it; retraining into the same folder changes it."""
    if not folder.is_dir():
        raise InputError("model folder not found", file=folder, reason="missing_file")
    files = {
        path.relative_to(folder).as_posix(): file_sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in _MODEL_FILE_SUFFIXES
        and not path.name.startswith((".", *_NOT_MODEL_FILES))
    }
    if not files:
        raise InputError("no model files (weights, config) in this folder", file=folder,
                         reason="missing_file")
    return content_hash(files)


def model_identity(model: ModelRef) -> JsonValue:
    """What names a model's outputs: its files' fingerprint; for an engine without local
    files, its generation config (engine, model, options) already does, so the display
    name is left out and two names for the same teacher share their outputs."""
    if model.fingerprint:
        return model.fingerprint
    if model.kind == "engine":
        return {"kind": "engine"}
    return {"kind": model.kind, "name": model.name}


def model_key(model: ModelRef, generation: dict[str, JsonValue]) -> str:
    """Cache key of (model, generation config): the same key means the same outputs."""
    return content_hash({"model": model_identity(model), "generation": generation})


def chunked(items: Sequence, size: int) -> list[Sequence]:
    return [items[start:start + size] for start in range(0, len(items), max(1, size))]




# --- finding a predictor by its spec ---------------------------------------------------------


@dataclass(frozen=True)
class PredictorOptions:
    """How a model is run; checked here, where every caller's options arrive, so a bad
    value is one line naming the option, not a torch traceback mid-run."""

    batch_size: int = 8
    max_new_tokens: int = 512
    dtype: str = "auto"
    device: str | None = None
    prompt: str | None = None
    engine_options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DistillError(f"--{name.replace('_', '-')} {value!r}: must be a positive "
                                   "integer")
        check_device(self.device)


def check_device(device: str | None) -> None:
    """``device`` must name a device this machine has: cpu, cuda, cuda:N (N below its GPU
    count) or mps; None and 'auto' choose one."""
    if device is None or device == "auto":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise DistillError(f"--device {device!r}: not a device (use cpu, cuda, cuda:N or "
                           "mps)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DistillError(f"--device {device!r}: this machine has no CUDA device (use "
                               "cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise DistillError(f"--device {device!r}: this machine has {count} CUDA "
                               f"device(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise DistillError(f"--device {device!r}: MPS is not available here (use cpu)")
    elif parsed.type != "cpu":
        raise DistillError(f"--device {device!r}: use cpu, cuda, cuda:N or mps")


# kind -> "module:function" that builds a predictor from (target, options).
PREDICTORS: dict[str, str] = {
    "siqvl": "distill.train.predictor:siqvl_predictor",
    "hf": "distill.generate.predictor:hf_predictor",
    "engine": "distill.generate.predictor:engine_predictor",
}
KINDS = tuple(PREDICTORS)


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
    if is_run_folder(path):
        return "siqvl", spec
    return ("siqvl" if read_model_type(path) == SIQVL_MODEL_TYPE else "hf"), spec


def load_predictor(spec: str, options: PredictorOptions) -> Predictor:
    """The predictor a spec names, built by the plugin registered for its kind."""
    kind, target = parse_model_spec(spec)
    module_name, _, attribute = PREDICTORS[kind].partition(":")
    factory: Callable[[str, PredictorOptions], Predictor] = getattr(
        importlib.import_module(module_name), attribute)
    return factory(target, options)
