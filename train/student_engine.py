"""A trained student as a teacher: what the ``hf`` engine runs for a SiQ-VL run or
checkpoint folder.

A teacher set may name a student of ours (``engine: hf, model: runs/cot/seed-0``) to write
the next round's traces. The generic ``hf`` engine loads models through transformers' Auto
classes without ``trust_remote_code`` (a folder's code is not run unasked), so a student
runs here instead (``distill.generate.engines.STUDENT_ENGINE``): the
student's own loader, asked in its own chat layout (the system and user text the teacher's
prompt renders, the image first in the user turn: ``StudentProcessor.chat_messages``, the
layout training wrote), sampled with the teacher's temperature and top_p, seeded per batch
from the teacher's seed and the rows in it, so a rerun of a batch writes the same text.
It is an ``hf`` engine in every record (traces say ``engine: hf``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from distill.core.model_folders import locate_checkpoint
from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineFailure,
    RequestResults,
)
from distill.generate.engines.hf import HFEngine, HFOptions, engine_device
from distill.train.inference import decode_row
from distill.train.siqvl.build import load_student


class StudentEngine(HFEngine):
    """The ``hf`` engine for a student folder (a run means its ``final/`` checkpoint)."""

    def __init__(self, model: str, options: HFOptions) -> None:
        Engine.__init__(self, model, options)  # not HFEngine's: no AutoProcessor for it
        self.options: HFOptions = options
        checkpoint, _ = locate_checkpoint(Path(model))
        self.device = device = engine_device(options.device)
        if options.dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, options.dtype)
        self.model, self.processor = load_student(checkpoint, dtype=dtype)
        self.model.to(device).eval()

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        """One image a request, as the student was trained; others fail alone."""
        usable = []
        for request in requests:
            if len(request.images) == 1:
                usable.append(request)
                continue
            failure = EngineFailure(reason="engine_error:image_count",
                                    message=f"a SiQ-VL student reads exactly one image; this "
                                            f"request has {len(request.images)}")
            yield RequestResults(request, [failure for _ in request.ks])
        yield from super().generate(usable)

    def _run(self, rows: list[tuple[ChatRequest, int, list]]) -> list[Completion]:
        start = time.perf_counter()
        processor = self.processor
        prompts = [processor.chat_ids(processor.chat_messages(request.system, request.user))
                   for request, _, _ in rows]
        batch = processor.padded_batch(prompts, [images[0] for _, _, images in rows])
        sampling = rows[0][0].sampling
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "num_beams": 1,
                                  "eos_token_id": processor.eos_token_id,
                                  "pad_token_id": processor.pad_token_id}
        if sampling.temperature > 0:
            # top_k=0: only the teacher's temperature and top_p shape the sampling (not
            # transformers' default top-k of 50)
            kwargs.update(do_sample=True, temperature=sampling.temperature,
                          top_p=sampling.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False)
        seed = hashlib.sha256(repr([(sampling.seed, r.id, k) for r, k, _ in rows]).encode())
        torch.manual_seed(int.from_bytes(seed.digest()[:4], "little"))
        dtype = next(self.model.language_model.parameters()).dtype
        with torch.inference_mode():
            new_tokens = self.model.generate(
                input_ids=batch["input_ids"].to(self.device),
                pixel_values=batch["pixel_values"].to(self.device, dtype),
                attention_mask=batch["attention_mask"].to(self.device),
                **kwargs).cpu()[:, batch["input_ids"].shape[1]:]
        latency = (time.perf_counter() - start) / len(rows)
        completions = []
        for tokens, prompt in zip(new_tokens.tolist(), prompts, strict=True):
            text, count = decode_row(tokens, processor)
            stopped = processor.eos_token_id in tokens[:count]
            completions.append(Completion(text=text, finish_reason="stop" if stopped else "length",
                                          latency_s=latency, prompt_tokens=len(prompt),
                                          completion_tokens=count))
        return completions

    def close(self) -> None:
        self.model = None
