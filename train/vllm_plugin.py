"""The vLLM plugin: a saved SiQ-VL student is a model vLLM serves.

vLLM calls ``register`` in every process it starts (the API server, the engine core, each
worker) through this package's ``vllm.general_plugins`` entry point (pyproject.toml). A
``ModelRegistry`` call from a user's script would reach only the process it runs in; V1's
engine core is another process (vllm-project/vllm#18740), hence the entry point.

Registration is light on purpose, since it runs in every vLLM process whatever model that
process serves: the ``siqvl`` config type for transformers' AutoConfig (so vLLM reads the
folder's config.json without ``trust_remote_code``), and the architecture under its lazy
``module:Class`` name; vLLM imports the model (``distill.train.vllm_siqvl``) only when a
SiQ-VL folder is served.
"""

from __future__ import annotations

ARCHITECTURE = "SiQVLForConditionalGeneration"
MODEL_CLASS = "distill.train.vllm_siqvl:SiQVLForConditionalGeneration"


def register() -> None:
    """Make a SiQ-VL folder loadable by ``vllm.LLM`` and ``vllm serve`` (idempotent)."""
    from vllm import ModelRegistry

    import distill.train.siqvl  # noqa: F401 - registers the config type with AutoConfig

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
