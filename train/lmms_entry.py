"""The `lmms_eval.models` entry point: tells lmms-eval (>= 0.6) where the SiQ-VL chat model
lives without importing it (lmms-eval imports the class only when ``--model siqvl`` is
asked for). lmms-eval is an optional extra (``pip install distill-vlm[lmms]``)."""

from __future__ import annotations

from typing import Any

MODEL_ID = "siqvl"
CHAT_CLASS_PATH = "distill.train.lmms_model.SiqvlChat"


def manifest() -> Any:
    """The ModelManifest lmms-eval's registry reads (lmms_eval/models/registry_v2.py)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, chat_class_path=CHAT_CLASS_PATH)
