"""Built-in teachers for the embedded digits data: small classifiers that really read the
image, then reason in text the way an LLM teacher is asked to.

Each teacher sees only what any engine sees: the image bytes and the rendered prompt. It
cuts the 2x2 grid into cells, skips blank cells, classifies each digit with a classifier
trained on the *train* pool of digit scans only (``source_pools(seed)["train"]``), reads
the question to learn which computation is asked, and writes a step-by-step rationale
ending in ``Answer: ...``. Its mistakes are the classifier's real misreadings.

Two readers with different error profiles: ``knn`` (k nearest neighbours on raw pixels:
coarse, vote-based probabilities) and ``logreg`` (multinomial logistic regression: smooth
probabilities, different confusions). With temperature > 0 each digit is *sampled* from
the classifier's (tempered, nucleus-cut) probabilities, so k samples can differ; the
random stream is a pure function of (seed, k, image, prompt), so a rerun writes the same.

A third model, ``judge``, answers a judge's rubric prompt (``prompts/judge-rubric.yaml``,
``distill judge``): it reads the digits itself with a third classifier (an RBF support
vector machine trained on the *val* pool's scans: the teachers were trained on the train
pool, whose scans make up the training items, so a judge trained there would have
memorised the very digits it grades; val scans never appear in train or test items and
the val split is only used to tune, never to score), finds the digits the judged
reasoning claims and its final answer, and grades: 5 when the claimed digits are the ones
it reads and the answer follows from them, 3 or 2 when one or more claimed digits differ
from its reading, 1 when the answer does not follow from the claimed digits (or the
reasoning names none). It cannot compare free-text answers and says so.

A fourth model, ``extract``, answers the answer judge's extraction prompt
(``prompts/answer-extract.yaml``, the judge's optional model tier) with plain rules, so
that tier is exercised on CPU with no downloads (``extract_reply``).
"""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from threadpoolctl import ThreadpoolController

from distill.core.digits import (
    CELL,
    GRID,
    IMAGE_SIZE,
    SCALE,
    digit_images,
    gold_answer,
    source_pools,
)
from distill.generate.engines.base import (
    ChatRequest,
    Completion,
    Engine,
    EngineOptions,
    RequestResults,
    Result,
)
from distill.schemas import SamplingParams

Reader = Literal["knn", "logreg", "svc"]
MODELS = ("knn", "logreg", "judge", "extract")
# A cell whose total ink (0..16 units a pixel, 64 pixels) is below this is blank; the
# faintest real scan in sklearn's digits has far more ink than this.
BLANK_INK = 24.0

_QUESTION_KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("sum_is_even", re.compile(r"\bsum\b.*\beven\b|\beven\b.*\bsum\b", re.I | re.S)),
    ("max_minus_min", re.compile(r"\b(largest|biggest|maximum|max)\b.*"
                                 r"\b(smallest|minimum|min)\b", re.I | re.S)),
    ("count_even", re.compile(r"\bhow many\b.*\beven\b", re.I | re.S)),
    ("sum", re.compile(r"\b(sum|add|total)\b", re.I)),
]


class BuiltinOptions(EngineOptions):
    pool_seed: int = 0  # must equal the digits ingest --seed: training never sees val/test


@lru_cache(maxsize=4)
def train_reader(reader: Reader, pool_seed: int, pool: str = "train"):
    """Fit the classifier on one pool's 8x8 scans (cached per process)."""
    images, labels = digit_images(source_pools(pool_seed)[pool])
    features = to_features(list(images))
    if reader == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        model = KNeighborsClassifier(n_neighbors=5)
    elif reader == "logreg":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0, max_iter=2000)
    elif reader == "svc":
        from sklearn.svm import SVC

        model = SVC(C=10.0)
    else:
        raise ValueError(f"unknown digit reader {reader!r}; use 'knn', 'logreg' or 'svc'")
    return model.fit(features, labels)


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    """Found once: scanning the loaded libraries costs milliseconds a time."""
    return ThreadpoolController()


def to_features(cells: list[np.ndarray]) -> np.ndarray:
    """Flattened cells in 0..1 ink (well-conditioned for the logistic regression)."""
    return np.stack([cell.reshape(-1) for cell in cells]).astype(np.float64) / 16.0


def read_cells(image_bytes: bytes) -> list[np.ndarray] | None:
    """The non-blank 8x8 cells (ink units 0..16, row-major order), or None if the image
    is not a digits grid."""
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            gray = np.asarray(image.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError):
        return None
    if gray.shape != (IMAGE_SIZE, IMAGE_SIZE):
        return None
    ink = (255.0 - gray) * 16.0 / 255.0
    side = GRID * CELL
    canvas = ink.reshape(side, SCALE, side, SCALE).mean(axis=(1, 3))
    cells = []
    for index in range(GRID * GRID):
        row, col = divmod(index, GRID)
        cell = canvas[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL]
        if cell.sum() >= BLANK_INK:
            cells.append(cell)
    return cells


def question_kind(text: str) -> str | None:
    for kind, pattern in _QUESTION_KINDS:
        if pattern.search(text):
            return kind
    return None


def _rng(request: ChatRequest, k: int, image_bytes: bytes) -> np.random.Generator:
    digest = hashlib.sha256()
    for part in (str(request.sampling.seed), str(k), request.user):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(hashlib.sha256(image_bytes).digest())
    return np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))


def choose_digits(probabilities: np.ndarray, classes: np.ndarray, sampling: SamplingParams,
                  rng: np.random.Generator) -> list[int]:
    """Argmax at temperature 0; otherwise sample from tempered, top-p-cut probabilities."""
    if sampling.temperature == 0.0:
        return [int(classes[i]) for i in probabilities.argmax(axis=1)]
    digits = []
    for row in probabilities:
        logits = np.log(np.clip(row, 1e-12, 1.0)) / sampling.temperature
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        order = np.argsort(-weights)
        keep = np.searchsorted(np.cumsum(weights[order]), sampling.top_p) + 1
        kept = order[:keep]
        digits.append(int(classes[rng.choice(kept, p=weights[kept] / weights[kept].sum())]))
    return digits


def _listing(digits: list[int]) -> str:
    names = [str(d) for d in digits]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _running_sum(digits: list[int]) -> tuple[str, int]:
    if len(digits) == 1:
        return f"{digits[0]} = {digits[0]}", digits[0]
    steps, total = [], digits[0]
    for digit in digits[1:]:
        steps.append(f"{total} + {digit} = {total + digit}")
        total += digit
    return ", ".join(steps), total


def rationale(kind: str, digits: list[int]) -> str:
    """A step-by-step answer in the cot prompt's format (last line ``Answer: ...``)."""
    noun = "digit" if len(digits) == 1 else "digits"
    lines = [f"The image shows {len(digits)} {noun}: {_listing(digits)}."]
    if kind in ("sum", "sum_is_even"):
        steps, total = _running_sum(digits)
        lines.append(f"Adding them: {steps}.")
        if kind == "sum":
            lines.append(f"Answer: {total}")
        else:
            parity = "even" if total % 2 == 0 else "odd"
            lines.append(f"{total} is {parity}, so the sum is {'' if parity == 'even' else 'not '}"
                         "an even number.")
            lines.append(f"Answer: {'yes' if parity == 'even' else 'no'}")
    elif kind == "max_minus_min":
        high, low = max(digits), min(digits)
        lines.append(f"The largest is {high} and the smallest is {low}.")
        lines.append(f"{high} - {low} = {high - low}.")
        lines.append(f"Answer: {high - low}")
    elif kind == "count_even":
        marks = ", ".join(f"{d} is {'even' if d % 2 == 0 else 'odd'}" for d in digits)
        count = sum(1 for d in digits if d % 2 == 0)
        lines.append(f"Checking each: {marks}.")
        lines.append(f"That makes {count} even {'digit' if count == 1 else 'digits'}.")
        lines.append(f"Answer: {count}")
    return "\n".join(lines)


class BuiltinDigitsEngine(Engine):
    """``engine: builtin`` with ``model: knn`` or ``model: logreg``."""

    name: ClassVar[str] = "builtin"
    Options = BuiltinOptions
    default_batch_size: ClassVar[int | None] = 256

    def __init__(self, model: str, options: BuiltinOptions) -> None:
        super().__init__(model, options)
        if model not in MODELS:
            raise ValueError(f"the builtin engine has models {list(MODELS)}, not {model!r}")
        if model == "judge":
            self.classifier = train_reader("svc", options.pool_seed, "val")
        elif model == "extract":
            self.classifier = None
        else:
            self.classifier = train_reader(model, options.pool_seed)  # type: ignore[arg-type]

    def generate(self, requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
        if self.model == "judge":
            yield from _judge_replies(self, requests)
            return
        if self.model == "extract":
            yield from _extract_replies(requests)
            return
        # Read every request first, then classify all their digits in one call: sklearn's
        # per-call overhead dwarfs the work for a handful of 8x8 cells.
        start = time.perf_counter()
        readings = [self._read(request) for request in requests]
        cells = [cell for reading in readings if isinstance(reading, tuple)
                 for cell in reading[1]]
        # One thread: sklearn's OpenMP pool costs milliseconds a call on a busy machine
        # for what is microseconds of arithmetic.
        with _threadpools().limit(limits=1):
            probabilities = (self.classifier.predict_proba(to_features(cells))
                             if cells else np.zeros((0, 10)))
        latency = (time.perf_counter() - start) / max(1, len(requests))
        offset = 0
        for request, reading in zip(requests, readings, strict=True):
            results: list[Result] = []
            for k in request.ks:
                if isinstance(reading, str):
                    text = reading
                else:
                    kind, request_cells = reading
                    rows = probabilities[offset:offset + len(request_cells)]
                    digits = choose_digits(rows, self.classifier.classes_, request.sampling,
                                           _rng(request, k, request.images[0]))
                    text = rationale(kind, digits)
                results.append(Completion(text=text, finish_reason="stop", latency_s=latency))
            if not isinstance(reading, str):
                offset += len(reading[1])
            yield RequestResults(request, results)

    @staticmethod
    def _read(request: ChatRequest) -> tuple[str, list[np.ndarray]] | str:
        """(question kind, digit cells), or the text of a refusal to answer."""
        if len(request.images) != 1:
            return f"I expected one image and got {len(request.images)}; I cannot answer."
        cells = read_cells(request.images[0])
        if cells is None:
            return "This image is not a grid of handwritten digits; I cannot read it."
        if not cells:
            return "I cannot find any digits in the image."
        kind = question_kind(request.user)
        if kind is None:
            return "I do not understand what computation the question asks for."
        return kind, cells


# --- the judge -------------------------------------------------------------------------------

_JUDGED_QUESTION = re.compile(r"^Question:\s*(?P<question>.+)$", re.MULTILINE)
_JUDGED_ANSWER = re.compile(r"final answer:\s*(?P<answer>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_CLAIMED_DIGITS = re.compile(r"shows \d+ digits?:\s*(?P<digits>[0-9 ,and]+)", re.IGNORECASE)


def grade(own: list[int], claimed: list[int] | None, kind: str | None,
          answer: str | None) -> tuple[int, str]:
    """(score 1..5, why) of a digits rationale, given the digits the judge reads itself."""
    if claimed is None or not claimed or kind is None or answer is None:
        return 1, "The reasoning does not say which digits it read, or what it answers."
    follows = gold_answer(kind, claimed) == answer.strip().rstrip(".").lower()
    if not follows:
        return 1, f"The answer {answer} does not follow from the digits it names {claimed}."
    misread = sum((Counter(own) - Counter(claimed)).values()) + \
        sum((Counter(claimed) - Counter(own)).values())
    if misread == 0:
        return 5, f"The digits {claimed} are the ones in the image and the answer follows."
    score = 3 if misread <= 2 else 2
    return score, f"I read {own} but the reasoning names {claimed}; its answer follows from " \
                  "what it names, not from the image."


def _judge_digits(request: ChatRequest, own: list[int]) -> str:
    question = _JUDGED_QUESTION.search(request.user)
    answer = _JUDGED_ANSWER.search(request.user)
    claimed_match = _CLAIMED_DIGITS.search(request.user)
    claimed = [int(d) for d in re.findall(r"\d", claimed_match.group("digits"))] \
        if claimed_match else None
    kind = question_kind(question.group("question")) if question else None
    score, why = grade(own, claimed, kind, answer.group("answer") if answer else None)
    return f"{why}\nScore: {score}"


def _judge_replies(engine: BuiltinDigitsEngine, requests: Sequence[ChatRequest]
                   ) -> Iterator[RequestResults]:
    start = time.perf_counter()
    readings = [read_cells(r.images[0]) if len(r.images) == 1 else None for r in requests]
    cells = [cell for reading in readings if reading for cell in reading]
    with _threadpools().limit(limits=1):
        labels = engine.classifier.predict(to_features(cells)) if cells else np.zeros(0)
    latency = (time.perf_counter() - start) / max(1, len(requests))
    offset = 0
    for request, reading in zip(requests, readings, strict=True):
        own = [int(label) for label in labels[offset:offset + len(reading or [])]]
        offset += len(reading or [])
        if "Answer A:" in request.user:
            text = "I can only grade digit rationales; I cannot compare free-text answers."
        elif not reading:
            text = "This image is not a grid of handwritten digits; I cannot grade it."
        else:
            text = _judge_digits(request, own)
        yield RequestResults(request, [Completion(text=text, finish_reason="stop",
                                                  latency_s=latency) for _ in request.ks])


# --- the extractor -----------------------------------------------------------------------------

_EXTRACT_TYPE = re.compile(r"^Expected answer type:\s*(\w+)", re.MULTILINE)
_EXTRACT_RESPONSE = re.compile(r"The response:\n(?P<response>.*)\n\nWhat final answer",
                               re.DOTALL)
_EXTRACT_VALUE = {
    "number": re.compile(r"-?\d+(?:\.\d+)?"),
    "choice": re.compile(r"(?<![A-Za-z])[A-H](?![A-Za-z])"),
    "yes_no": re.compile(r"\b(?:yes|no)\b", re.IGNORECASE),
}


def extract_reply(prompt: str) -> str:
    """``model: extract``, a stand-in for a small instruct model on the answer judge's model
    tier (prompts/answer-extract.yaml), so the tier runs on a laptop CPU: the last value of
    the asked type in the response's last line that has one, or NONE. Deliberately plain
    -- a real extraction model does better -- and never the gold: it sees only the prompt."""
    kind = _EXTRACT_TYPE.search(prompt)
    response = _EXTRACT_RESPONSE.search(prompt)
    pattern = _EXTRACT_VALUE.get(kind.group(1) if kind else "")
    if pattern is None or response is None:
        return "Answer: NONE"
    for line in reversed(response.group("response").strip().splitlines()):
        found = pattern.findall(line)
        if found:
            value = found[-1].lower() if kind and kind.group(1) == "yes_no" else found[-1]
            return f"Answer: {value}"
    return "Answer: NONE"


def _extract_replies(requests: Sequence[ChatRequest]) -> Iterator[RequestResults]:
    for request in requests:
        start = time.perf_counter()
        text = extract_reply(request.user)
        latency = time.perf_counter() - start
        yield RequestResults(request, [Completion(text=text, finish_reason="stop",
                                                  latency_s=latency) for _ in request.ks])
