"""Teacher sets: which teachers answer which categories, with which prompt and k.

A teacher set is a YAML file (``data/teachers/digits.yaml`` ships)::

    teachers:
      knn:                       # teacher id: goes into every trace and its key
        engine: builtin          # builtin | openai | hf | vllm | package.module:Class
        model: knn               # model path / served name / builtin reader
        prompt: cot              # a prompts/ name or a file path
        k: 2                     # samples per item
        sampling: {temperature: 0.7, top_p: 1.0, max_tokens: 256, seed: 0}
        batch_size: 256          # optional: requests handed to the engine at once
        options: {}              # engine-specific (validated by the engine's Options)
    routing:
      default: [knn, logreg]     # teachers for categories not listed below
      max_minus_min: [logreg]

A trained student of ours can be a teacher (the next round's): ``engine: hf`` (or
``vllm``, which loads local folders too) with ``model:`` its run or checkpoint folder. The
teacher then names the checkpoint (``model`` becomes the checkpoint folder, and its
fingerprint and run manifest are part of the teacher: a student retrained into the same
folder is another teacher, so its traces never mix with the old ones'), asks with the
student's own prompt (the one saved with it for CoT, unless ``prompt:`` names the other
one it was trained with), and ``distill lineage`` follows its traces back through the
student's run and data.

Every teacher is validated when the file is loaded (unknown keys, unknown engines, bad
options, unknown prompts, routes to undefined teachers), with the file and field named.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from distill.core.config_files import (
    ConfigFile,
    YamlDocument,
    located_error,
    read_yaml_file,
    validate,
)
from distill.core.errors import DistillError, InputError
from distill.core.model_folders import is_student_folder, locate_student
from distill.core.paths import DATA_DIR
from distill.core.predictors import model_fingerprint
from distill.core.prompts import STUDENT_KINDS, PromptKind, PromptTemplate, load_prompt
from distill.generate.engines import STUDENT_ENGINE, engine_class
from distill.generate.engines.base import Engine, EngineOptions
from distill.schemas import SamplingParams, content_hash
from distill.schemas.base import Identifier

TEACHERS_DIR = DATA_DIR / "teachers"
# Engines whose model is a local folder they load (a served model's name is not a path,
# even where a folder of that name happens to exist)
LOCAL_ENGINES = ("hf", "vllm")


class TeacherSpec(ConfigFile):

    engine: str
    model: str = Field(min_length=1)
    prompt: str = "cot"
    k: int = Field(default=1, ge=1, le=1024)
    sampling: SamplingParams = SamplingParams()
    batch_size: int | None = Field(default=None, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class TeacherSetFile(ConfigFile):

    teachers: dict[Identifier, TeacherSpec] = Field(min_length=1)
    routing: dict[str, list[Identifier]] = Field(default_factory=dict)

    @field_validator("routing")
    @classmethod
    def _lists_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for category, ids in value.items():
            if len(set(ids)) != len(ids):
                raise ValueError(f"category {category!r} lists a teacher twice")
        return value


@dataclass(frozen=True)
class StudentCheckpoint:
    """A trained student of ours as a teacher: the checkpoint that answers, by content."""

    path: str  # the checkpoint folder, absolute (a run folder means its final/)
    fingerprint: str  # distill.core.predictors.model_fingerprint of its files
    run_manifest: str | None  # its run's manifest.json: lineage goes on from there


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher: its spec, its prompt template and its validated engine options."""

    id: str
    spec: TeacherSpec
    prompt: PromptTemplate
    options: EngineOptions
    engine_cls: type[Engine]
    checkpoint: StudentCheckpoint | None = None

    @property
    def engine_name(self) -> str:
        return self.engine_cls.name

    @property
    def batch_size(self) -> int | None:
        return self.spec.batch_size or self.engine_cls.default_batch_size

    def make_engine(self) -> Engine:
        return self.engine_cls(self.spec.model, self.options)

    def identity(self) -> dict[str, Any]:
        """What defines this teacher's outputs (hashed into the run's plan)."""
        identity = {"id": self.id, "engine": self.engine_name, "model": self.spec.model,
                    "prompt_hash": self.prompt.hash, "k": self.spec.k,
                    "sampling": self.spec.sampling.model_dump(mode="json")}
        if self.checkpoint is not None:  # retrained in place: another teacher
            identity["checkpoint_fingerprint"] = self.checkpoint.fingerprint
        return identity


@dataclass(frozen=True)
class TeacherSet:
    teachers: dict[str, Teacher]
    routing: dict[str, list[str]]
    source: str

    def for_category(self, category: str) -> list[Teacher]:
        ids = self.routing.get(category, self.routing.get("default"))
        if ids is None:
            ids = list(self.teachers) if not self.routing else []
        return [self.teachers[teacher_id] for teacher_id in ids]

    @cached_property
    def hash(self) -> str:
        return content_hash({"teachers": [t.identity() for t in self.teachers.values()],
                             "routing": self.routing})

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "hash": self.hash, "routing": self.routing,
                "teachers": {tid: {**t.identity(), "prompt_id": t.prompt.id,
                                   "options": t.options.model_dump(mode="json"),
                                   **({"checkpoint": asdict(t.checkpoint)}
                                      if t.checkpoint is not None else {})}
                             for tid, t in self.teachers.items()}}


def resolve_engine(document: YamlDocument, where: tuple[str, ...], engine: str,
                   options: dict[str, Any]) -> tuple[type[Engine], EngineOptions]:
    """The engine class a config names and its options, checked against the engine's own
    Options model; errors name the file and the key (``where`` + engine/options)."""
    try:
        cls = engine_class(engine)
    except DistillError as exc:
        raise document.error((*where, "engine"), str(exc), "bad_teacher") from None
    try:
        return cls, cls.Options.model_validate(options)
    except ValidationError as exc:
        raise located_error(exc, document, cls.Options, prefix=(*where, "options")) from None


def resolve_prompt(document: YamlDocument, where: tuple[str, ...], name: str,
                   kind: PromptKind | tuple[PromptKind, ...]) -> PromptTemplate:
    try:
        return load_prompt(name, kind)
    except InputError as exc:
        raise document.error(where, f"prompt {name!r}: {exc}", "bad_teacher") from None


def load_teacher_set(name_or_path: str | Path) -> TeacherSet:
    """A teacher set by path, or by name of a file in data/teachers (``digits``)."""
    document = read_yaml_file(name_or_path, TEACHERS_DIR, "teacher set")
    return resolve_teacher_set(document, validate(document, TeacherSetFile))


def resolve_teacher_set(document: YamlDocument, parsed: TeacherSetFile) -> TeacherSet:
    """Engines, engine options and prompts of every teacher, checked where the file names
    them; routes only to teachers the file defines."""
    teachers = {}
    for teacher_id, spec in parsed.teachers.items():
        where = ("teachers", teacher_id)
        if spec.engine in LOCAL_ENGINES and is_student_folder(Path(spec.model).expanduser()):
            teachers[teacher_id] = _student_teacher(document, teacher_id, spec)
            continue
        cls, options = resolve_engine(document, where, spec.engine, spec.options)
        prompt = resolve_prompt(document, (*where, "prompt"), spec.prompt, "teacher")
        teachers[teacher_id] = Teacher(teacher_id, spec, prompt, options, cls)
    for category, ids in parsed.routing.items():
        for teacher_id in ids:
            if teacher_id not in teachers:
                raise document.error(("routing", category),
                                     f"routes to undefined teacher {teacher_id!r} (defined: "
                                     f"{sorted(teachers)})", "bad_teacher")
    return TeacherSet(teachers, dict(parsed.routing), str(document.path))


def _student_teacher(document: YamlDocument, teacher_id: str, spec: TeacherSpec) -> Teacher:
    """A trained student as a teacher: its checkpoint named and fingerprinted, asked with
    the prompt it was trained on; ``hf`` runs it through the student's own loader."""
    where = ("teachers", teacher_id)
    try:
        checkpoint, run_manifest = locate_student(Path(spec.model).expanduser())
    except InputError as exc:
        raise document.error((*where, "model"), exc.message, "bad_teacher") from None
    cls, options = resolve_engine(document, where, spec.engine, spec.options)
    student_engine = engine_class(STUDENT_ENGINE)
    if spec.engine == "hf":
        cls = student_engine
    trained = student_engine.trained_prompts(str(checkpoint))  # type: ignore[attr-defined]
    given = "prompt" in spec.model_fields_set
    prompt = resolve_prompt(document, (*where, "prompt"),
                            spec.prompt if given else trained["cot"], STUDENT_KINDS)
    allowed = {load_prompt(name, STUDENT_KINDS).hash: name for name in trained.values()}
    if prompt.hash not in allowed:
        raise document.error((*where, "prompt"),
                             f"this student was trained to be asked with "
                             f"{' or '.join(sorted(set(trained.values())))} (its saved "
                             f"prompts); prompt {spec.prompt!r} would ask it in a layout it "
                             "never saw (leave prompt out for its CoT prompt)", "bad_teacher")
    named = StudentCheckpoint(path=str(checkpoint), fingerprint=model_fingerprint(checkpoint),
                              run_manifest=str(run_manifest) if run_manifest else None)
    spec = spec.model_copy(update={"model": str(checkpoint), "prompt": prompt.id})
    return Teacher(teacher_id, spec, prompt, options, cls, named)
