"""Engine registry: a teacher's ``engine:`` names one of these, or ``package.module:Class``
for an engine of your own (any subclass of ``Engine``). Backends import lazily, so the
heavy ones (vllm, transformers) load only when a teacher uses them."""

from __future__ import annotations

import importlib
import inspect

from distill.core.errors import DistillError
from distill.generate.engines.base import Engine

ENGINES: dict[str, str] = {
    "builtin": "distill.generate.engines.builtin:BuiltinDigitsEngine",
    "openai": "distill.generate.engines.openai:OpenAIEngine",
    "hf": "distill.generate.engines.hf:HFEngine",
    "vllm": "distill.generate.engines.vllm:VLLMEngine",
}
# What ``hf`` runs for a SiQ-VL student folder of ours (a trained student as the next round's
# teacher): its own loader and prompt layout, no remote code run. Found by name, like the
# predictors: the student lives in a layer above the stages.
STUDENT_ENGINE = "distill.train.student_engine:StudentEngine"


def engine_class(name: str) -> type[Engine]:
    """The engine class for a registry name or a ``module:Class`` path."""
    target = ENGINES.get(name, name)
    module_name, sep, attribute = target.partition(":")
    if not (sep and module_name.strip() and attribute.strip()):
        raise DistillError(f"unknown engine {name!r}; use one of {sorted(ENGINES)} "
                           "or 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise DistillError(f"cannot load engine {name!r} ({target}): {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise DistillError(f"engine {name!r} ({target}) is not a subclass of Engine")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise DistillError(f"engine {name!r} ({target}) is abstract (it does not implement "
                           f"{missing}); name a concrete engine")
    return cls
