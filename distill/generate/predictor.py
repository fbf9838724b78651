"""Any engine of the generate stage (builtin digit readers, vLLM, an OpenAI-compatible
server, transformers), so a teacher is scored exactly like a student.

Specs:

* ``engine:ENGINE:MODEL``: a registry engine (``builtin``, ``vllm``, ``openai``, ``hf``) or
  your own (``engine:package.module:Class:MODEL``), with its default options plus
  ``--engine-option KEY=VALUE``. A MODEL that names a SiQ-VL student's folder
  (``engine:vllm:runs/cot/final``, or ``engine:openai:runs/cot/final`` against ``vllm serve
  runs/cot/final``) is asked with the prompt it was trained with, and the result names its
  checkpoint and training run, as ``siqvl:`` does;
* ``engine:TEACHERSET#TEACHER``: a teacher of a teacher set (a file, or a name in
  data/teachers): its engine, model and options. Eval always decodes greedily with the
  mode's prompt (``--prompt`` to override), whatever the teacher's sampling and k.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import JsonValue, ValidationError

from distill.core.errors import DistillError, InputError
from distill.core.images import read_image_bytes
from distill.core.model_folders import is_student_folder, locate_checkpoint
from distill.core.predictors import (
    Generation,
    Mode,
    PredictorOptions,
    check_image_text_model,
    chunked,
    load_sample_image,
    model_fingerprint,
    model_prompt,
)
from distill.core.prompts import PromptTemplate
from distill.schemas import ModelRef, Sample, SamplingParams

if TYPE_CHECKING:
    from distill.generate.engines.base import Engine, EngineOptions

log = logging.getLogger(__name__)


def resolve_engine(spec: str, extra_options: dict[str, Any]
                   ) -> tuple[str, type[Engine], str, EngineOptions]:
    """(display name, engine class, model, validated options) for an engine spec."""
    from distill.generate.engines import engine_class

    if "#" in spec:
        from distill.generate.teachers import load_teacher_set

        set_name, _, teacher_id = spec.rpartition("#")
        teachers = load_teacher_set(set_name)
        if teacher_id not in teachers.teachers:
            raise InputError(f"no teacher {teacher_id!r} in this teacher set (teachers: "
                             f"{sorted(teachers.teachers)})", file=teachers.source,
                             reason="config_error")
        teacher = teachers.teachers[teacher_id]
        options = teacher.options
        if extra_options:
            options = _options(teacher.engine_cls, {**options.model_dump(), **extra_options})
        return teacher_id, teacher.engine_cls, teacher.spec.model, options
    engine_name, sep, model = spec.rpartition(":")
    if not sep or not engine_name or not model:
        raise DistillError(f"engine spec {spec!r}: use engine:ENGINE:MODEL (e.g. "
                           "engine:builtin:knn) or engine:TEACHERSET#TEACHER")
    cls = engine_class(engine_name)
    return f"{cls.name}-{Path(model).name or model}", cls, model, _options(cls, extra_options)


def _options(cls: type[Engine], values: dict[str, Any]) -> EngineOptions:
    try:
        return cls.Options.model_validate(values)
    except ValidationError as exc:
        error = InputError.from_validation(exc, file=None, line=None)
        raise DistillError(f"engine '{cls.name}' option {error.field!r}: {error.message}"
                           ) from None


# Engine options that change how fast outputs come, not what they are: left out of the
# cache key, so another batch size reuses the same outputs.
_SPEED_OPTIONS = frozenset({"micro_batch_size"})


class EnginePredictor:
    """Greedy, one sample per item, through the generate stage's engine interface."""

    def __init__(self, spec: str, options: PredictorOptions, *,
                 kind: Literal["engine", "hf"] = "engine", name: str | None = None) -> None:
        self.spec = spec
        self.options = options
        self.kind = kind
        self.name, self.engine_cls, self.model, self.engine_options = resolve_engine(
            spec, dict(options.engine_options))
        if name is None and "#" not in spec and is_student_folder(Path(self.model)):
            checkpoint, _ = locate_checkpoint(Path(self.model))  # as siqvl: names it
            name = f"{checkpoint.parent.name}/{checkpoint.name} ({self.engine_cls.name})"
        self.name = name or self.name

    @classmethod
    def local_hf(cls, path: Path, options: PredictorOptions) -> EnginePredictor:
        """``hf:PATH``: a local transformers image-text-to-text model, run by the generate
        stage's ``hf`` engine (batched, left-padded greedy decoding with a KV cache)."""
        check_image_text_model(path)
        path = path.resolve()
        values = {"dtype": options.dtype, "device": options.device or "auto",
                  "micro_batch_size": options.batch_size, **dict(options.engine_options)}
        return cls(f"hf:{path}", replace(options, engine_options=tuple(values.items())),
                   kind="hf", name=path.name)

    @cached_property
    def model_ref(self) -> ModelRef:
        local = Path(self.model).expanduser()
        if not local.is_dir():
            return ModelRef(kind=self.kind, name=self.name)
        run_manifest = None
        if is_student_folder(local):  # a student served by this engine: lineage goes on
            local, manifest = locate_checkpoint(local)
            run_manifest = str(manifest) if manifest else None
        return ModelRef(kind=self.kind, name=self.name, path=str(local.resolve()),
                        run_manifest=run_manifest, fingerprint=model_fingerprint(local))

    def prompt(self, mode: Mode) -> PromptTemplate:
        """The mode's prompt; a student's own (see ``model_prompt``)."""
        return model_prompt(mode, self.model, self.options.prompt)

    def generation_config(self, mode: Mode) -> dict[str, JsonValue]:
        prompt = self.prompt(mode)
        # The engine, its model and options decide the outputs as much as the weights do
        # (a local model folder is named by its fingerprint, not by where it lies).
        config: dict[str, JsonValue] = {
            "mode": mode, "prompt_id": prompt.id, "prompt_hash": prompt.hash,
            "decoding": "greedy", "max_new_tokens": self.options.max_new_tokens,
            "engine": self.engine_cls.name,
            "engine_options": {key: value for key, value in
                               self.engine_options.model_dump(mode="json").items()
                               if key not in _SPEED_OPTIONS}}
        if self.model_ref.fingerprint is None:
            config["model"] = self.model
        return config

    @cached_property
    def engine(self) -> Engine:
        try:
            return self.engine_cls(self.model, self.engine_options)
        except (ValueError, OSError) as exc:
            raise DistillError(f"cannot start engine '{self.engine_cls.name}' with model "
                               f"{self.model!r}: {exc}") from None

    def predict(self, samples: Sequence[Sample], image_root: Path | None,
                mode: Mode) -> list[Generation]:
        from distill.generate.engines.base import ChatRequest, Completion

        prompt = self.prompt(mode)
        sampling = SamplingParams(temperature=0.0, top_p=1.0,
                                  max_tokens=self.options.max_new_tokens, seed=0)
        outputs: list[Generation] = []
        for batch in chunked(samples, self.engine_cls.default_batch_size or len(samples)):
            requests = []
            for index, sample in enumerate(batch):
                load_sample_image(sample, image_root)  # a bad image names its sample
                system, user = prompt.render(sample)
                requests.append(ChatRequest(id=str(index), system=system, user=user,
                                            images=(read_image_bytes(sample.image,
                                                                     image_root),),
                                            sampling=sampling))
            started = time.perf_counter()
            results: dict[str, Any] = {}
            for done in self.engine.generate(requests):
                results[done.request.id] = done.results[0]
            share = (time.perf_counter() - started) / max(1, len(batch))
            transient = []
            for index, sample in enumerate(batch):
                result = results.get(str(index))
                if isinstance(result, Completion):
                    tokens = result.completion_tokens
                    if tokens is None:  # engines that do not count tokens: count words
                        tokens = len(result.text.split())
                    outputs.append(Generation(text=result.text, output_tokens=tokens,
                                              latency_s=share,
                                              finish_reason=result.finish_reason))
                elif result is not None and result.permanent:
                    log.warning("%s: no output for %s (%s: %s); scored as unparseable",
                                self.name, sample.id, result.reason, result.message)
                    outputs.append(Generation(text="", output_tokens=0, latency_s=share,
                                              finish_reason="other"))
                else:
                    transient.append((sample.id, result))
            if transient:
                sample_id, result = transient[0]
                why = "no result" if result is None else f"{result.reason}: {result.message}"
                raise DistillError(f"{len(transient)} request(s) to {self.name} failed for "
                                   f"now (first: {sample_id}, {why}); finished chunks are "
                                   "cached, run the same command again to retry")
        return outputs

    def close(self) -> None:
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.close()


def engine_predictor(spec: str, options: PredictorOptions) -> EnginePredictor:
    """``engine:SPEC`` (the predictor registry's entry for kind ``engine``)."""
    return EnginePredictor(spec, options)


def hf_predictor(path: str, options: PredictorOptions) -> EnginePredictor:
    """``hf:PATH`` (the predictor registry's entry for kind ``hf``)."""
    return EnginePredictor.local_hf(Path(path), options)
