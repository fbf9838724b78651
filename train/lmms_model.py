"""The SiQ-VL student as an lmms-eval chat model: ``lmms-eval --model siqvl --model_args
pretrained=RUN_OR_CHECKPOINT --tasks ...``.

lmms-eval (0.7.x) finds it through the ``lmms_eval.models`` entry point (see
``distill.train.lmms_entry``) and, because ``is_simple`` is False, hands it chat requests:
``Instance.args = (context, doc_to_messages, generation_kwargs, doc_id, task, split)``
(lmms_eval/api/task.py ``ConfigurableMessagesTask.construct_requests``, EvolvingLMMs-Lab/
lmms-eval v0.7.2 cb45ac4d, unchanged in the 0.7.3 wheel). Generation is the train
package's own (``generate_answers``: the processor's prompt, greedy, KV cache), so a
checkpoint answers here exactly as under ``distill eval``.

Two kinds of task:

* a task ``distill eval lmms-task`` wrote over one of our eval sets: its docs carry the
  Sample record (``distill_sample``), its image root and the mode; the student is asked that
  Sample exactly as ``distill eval --mode MODE`` asks it.
* any other task: the text of its messages becomes the question (the image is the first
  image of the messages) and the student's prompt for ``mode`` (model_args ``mode=cot`` by
  default, or ``direct``) wraps it, as in training. Only single-image tasks can be run.

Decoding is always greedy, as in ``distill eval``: a task that asks for sampling
(``temperature > 0``) is run greedily with a warning. Stop strings (``until``) are not
applied, like lmms-eval's own HF chat model (lmms_eval/models/chat/huggingface.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger
from PIL import Image

from distill.core.errors import DistillError
from distill.core.model_folders import locate_checkpoint
from distill.core.paths import slug
from distill.schemas import ImageRef, Sample

DEFAULT_MAX_NEW_TOKENS = 512


class SiqvlChat(lmms):
    """lmms-eval chat model over a SiQ-VL run folder or checkpoint."""

    is_simple = False

    def __init__(self, pretrained: str, device: str | None = None, dtype: str = "auto",
                 batch_size: int | str = 8, mode: str = "cot",
                 max_new_tokens: int | str | None = None, threads: int | str | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        import torch

        from distill.train.siqvl.build import load_student

        if kwargs:
            logger.warning(f"siqvl ignores unknown model_args: {sorted(kwargs)}")
        if mode not in ("cot", "direct"):
            raise DistillError(f"siqvl: mode must be cot or direct, got {mode!r}")
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        self.checkpoint, _ = locate_checkpoint(Path(pretrained))
        self.mode = mode
        self.batch_size_per_gpu = int(batch_size)
        self.default_max_new_tokens = int(max_new_tokens) if max_new_tokens else None
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            self._dtype = torch.bfloat16 if self._device.startswith("cuda") else torch.float32
        else:
            self._dtype = getattr(torch, dtype)
        self._model, self.processor = load_student(self.checkpoint, dtype=self._dtype)
        self._model.to(self._device).eval()

    # lmms-eval reads these attributes of a model.
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> str:
        return self._device

    @property
    def model(self) -> Any:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def eot_token_id(self) -> int:
        return self.processor.eos_token_id

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("siqvl generates answers; loglikelihood tasks are not "
                                  "supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("siqvl answers single-turn questions only")

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer every request; requests are grouped by (image root, mode, max new tokens)
        and, inside a group, kept in doc order, so a task over our eval set is batched as
        ``distill eval`` batches it."""
        from distill.train.inference import generate_answers

        groups: dict[tuple[str | None, str, int], list[tuple[int, Sample]]] = defaultdict(list)
        for index, request in enumerate(requests):
            context, doc_to_messages, gen_kwargs, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            sample, image_root, mode = self._sample_of(doc, doc_to_messages, task, doc_id)
            groups[(image_root, mode, self._max_new_tokens(gen_kwargs))].append(
                (index, sample))
        results: list[GenerationResult | None] = [None] * len(requests)
        for (image_root, mode, max_new_tokens), members in groups.items():
            members.sort(key=lambda member: requests[member[0]].args[3])
            samples = [sample for _, sample in members]
            started = time.perf_counter()
            outputs = generate_answers(self._model, self.processor, samples, image_root,
                                       mode=mode, max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
                                       batch_size=self.batch_size)
            logger.info(f"siqvl: {len(samples)} answers in {time.perf_counter() - started:.1f}s")
            for (index, _), (text, tokens) in zip(members, outputs, strict=True):
                results[index] = GenerationResult(text=text,
                                                  token_counts=TokenCounts(output_tokens=tokens))
        return results  # type: ignore[return-value]

    def _max_new_tokens(self, gen_kwargs: dict[str, Any]) -> int:
        if float(gen_kwargs.get("temperature") or 0) > 0:
            logger.warning("siqvl decodes greedily; the task's temperature is ignored")
        value = gen_kwargs.get("max_new_tokens") or self.default_max_new_tokens
        return int(value or DEFAULT_MAX_NEW_TOKENS)

    def _sample_of(self, doc: dict[str, Any], doc_to_messages: Any, task: str,
                   doc_id: int) -> tuple[Sample, str | None, str]:
        """(Sample, image root, mode) for one document."""
        if isinstance(doc.get("distill_sample"), str):  # a task over one of our eval sets
            sample = Sample.model_validate_json(doc["distill_sample"])
            return sample, doc.get("distill_image_root"), doc.get("distill_mode") or self.mode
        messages = doc_to_messages(doc)
        return sample_from_messages(messages, f"{task}-{doc_id}"), None, self.mode


def sample_from_messages(messages: list[dict[str, Any]], sample_id: str) -> Sample:
    """A Sample for an lmms-eval chat turn: its text as the question, its one image inline.

    The gold answer is unknown to the model side; a placeholder fills the required field
    (it is never shown to the student: prompts hold the question, choices and answer type).
    """
    texts: list[str] = []
    images: list[Any] = []
    for message in messages:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts or []:
            if part.get("type") == "text" and message.get("role") != "system":
                texts.append(part["text"])
            elif part.get("type") == "image":
                images.append(part.get("url"))
            elif part.get("type") in ("video", "audio"):
                raise DistillError(f"siqvl reads images only; {sample_id} holds "
                                   f"{part['type']}")
    if len(images) != 1:
        raise DistillError(f"siqvl answers single-image questions; {sample_id} holds "
                           f"{len(images)} images")
    data = _png_bytes(images[0])
    return Sample(id=slug(sample_id, "item"), question="\n".join(texts).strip() or "?",
                  answer="?", answer_type="text", category="lmms", source="lmms-eval",
                  split="test",
                  image=ImageRef(data=base64.b64encode(data).decode("ascii"),
                                 sha256=hashlib.sha256(data).hexdigest()))


def _png_bytes(image: Any) -> bytes:
    if isinstance(image, str | Path):
        image = Image.open(image)
    if not isinstance(image, Image.Image):
        raise DistillError(f"siqvl cannot read an image of type {type(image).__name__}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
