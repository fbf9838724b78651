"""Sample: one image-question-answer item, the unit of work of every stage."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from distill.schemas.base import Identifier, NonEmptyStr, Part, Record, Sha256Hex
from distill.schemas.hashing import content_hash

AnswerType = Literal["number", "choice", "text", "yes_no"]
CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?(/[1-9]\d*)?$")

def check_relative_path(path: str) -> str:
    """Refuse any image path that could leave its dataset root by its spelling alone.

    Symlinks that point outside the root are caught when the path is resolved on disk
    (``distill.core.images.resolve_image_path``); this check needs no file system. Plain string
    tests (no pathlib): it runs for every image of every stage.
    """
    if not path or path != path.strip():
        raise ValueError("image path is empty or has surrounding whitespace")
    if "\x00" in path:
        raise ValueError("image path contains a NUL byte")
    if "\\" in path or _WINDOWS_DRIVE.match(path):
        raise ValueError(f"image path {path!r} must be a POSIX path relative to the dataset root")
    if path.startswith("/"):
        raise ValueError(f"image path {path!r} is absolute; it must be relative to its root")
    if ".." in path.split("/"):
        raise ValueError(f"image path {path!r} escapes the dataset root ('..')")
    return path

class ImageRef(Part):
    """An image by path under the dataset root, or inline bytes; always with its sha256.

    The hash is taken at ingestion and checked when the image is loaded, so a trace key
    names exactly the pixels the teacher saw.
    """

    path: str | None = None
    data: str | None = Field(default=None, description="inline image bytes, base64")
    sha256: Sha256Hex

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value)

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"inline image data is not valid base64: {exc}") from None
        return value

    @classmethod
    def inline(cls, data: bytes, sha256: str) -> ImageRef:
        return cls(data=base64.b64encode(data).decode("ascii"), sha256=sha256)

    def inline_bytes(self) -> bytes | None:
        return None if self.data is None else base64.b64decode(self.data)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageRef:
        if (self.path is None) == (self.data is None):
            raise ValueError("an image needs exactly one of 'path' or 'data'")
        return self

class Sample(Record):
    """One item: image, question, optional choices and the gold answer.

    ``answer`` is None for an item without a gold answer (an unlabeled image pool): its
    label can only be derived later, from teacher consensus or a judge (the filter marks
    such labels ``label_source: consensus|judge``). ``answer_type`` (and ``choices``) are
    still required: they say how answers to the item are read and compared.

    ``meta`` keys the answer judge reads (outside the content hash, so adding them keeps
    trace keys): ``precision`` (int, decimals the gold number is rounded to, as MathVista
    states it: '1.732' matches '1.73' at 2), ``relative_tolerance`` (float, e.g. 0.05
    for ChartQA's relaxed accuracy) and ``language`` (a language code, 'fr': how the item's
    numbers are written, a decimal comma or point; without it the output's own numbers
    decide).
    """

    id: Identifier
    image: ImageRef
    question: NonEmptyStr
    choices: list[NonEmptyStr] | None = None
    answer: NonEmptyStr | None = None
    answer_type: AnswerType
    category: Identifier
    source: NonEmptyStr
    split: Identifier = "train"
    meta: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("question", "answer")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _answer_fits_type(self) -> Sample:
        if self.answer_type == "choice":
            if not self.choices or len(self.choices) < 2:
                raise ValueError("a 'choice' sample needs at least two choices")
            if len(self.choices) > len(CHOICE_LETTERS):
                raise ValueError(f"at most {len(CHOICE_LETTERS)} choices are supported")
            letters = CHOICE_LETTERS[: len(self.choices)]
            if self.answer is not None and self.answer not in letters:
                raise ValueError(f"a 'choice' answer must be one of the letters {letters!r}")
        elif self.choices is not None:
            raise ValueError("'choices' is only allowed when answer_type is 'choice'")
        if self.answer is None:
            return self
        if self.answer_type == "yes_no" and self.answer not in ("yes", "no"):
            raise ValueError("a 'yes_no' answer must be 'yes' or 'no'")
        if self.answer_type == "number" and not _NUMBER.match(self.answer.strip()):
            raise ValueError(f"a 'number' answer must be a number, got {self.answer!r}")
        return self

    @property
    def has_gold(self) -> bool:
        return self.answer is not None

    def content_hash(self) -> str:
        """Hash of everything a teacher sees or is judged against (image by its sha256).

        Unchanged by gold answers becoming optional: a sample with gold hashes exactly as
        before (so its trace keys and dataset versions stay), one without hashes with
        ``answer: null``, which no sample with gold can have."""
        return content_hash(
            {
                "id": self.id,
                "image_sha256": self.image.sha256,
                "question": self.question,
                "choices": self.choices,
                "answer": self.answer,
                "answer_type": self.answer_type,
            }
        )
