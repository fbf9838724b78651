"""`distill datasets export --format trl|llamafactory|swift`: a version as chat conversations
that other trainers read, so a user can train their own student (Qwen2.5-VL, InternVL, ...)
on the distilled corpus without writing a converter.

One conversation per kept trace: [system,] user (the image and the question, in the same
prompt template the SiQ-VL student is trained with), assistant (the teacher's reasoning and
an answer line for ``--target cot``, the answer line alone for ``direct``: the exact target
of `distill train`, from `distill.core.prompts.target_text`). The layouts follow each
trainer's own reader:

- ``trl``: a `datasets.save_to_disk` folder with ``messages`` (structured content parts,
  ``{"type": "image"}`` where the image goes) and ``images`` (an image list, bytes embedded),
  the conversational language-modeling layout that TRL's SFTTrainer and its
  ``DataCollatorForVisionLanguageModeling`` read (trl/trainer/sft_trainer.py).
- ``llamafactory``: ``data.json`` in the sharegpt layout (``messages`` with ``<image>`` in
  the user turn, ``images`` as paths relative to the folder) and a ``dataset_info.json``
  entry naming its columns and role tags (LLaMA-Factory's data/README.md); point
  ``dataset_dir`` (and ``media_dir``) at the folder.
- ``swift``: ``data.jsonl`` in ms-swift's standard ``messages`` + ``images`` layout, the
  image paths relative to the folder (run swift from it, or rewrite the prefix).

Images are written once per distinct image (``images/<sha256>.<ext>``) for the path
layouts. Output is built beside its final path and renamed into place when complete
(``distill.filter.export.export_target``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distill.core.images import read_image_bytes
from distill.core.prompts import load_prompt, target_text
from distill.core.shards import iter_records
from distill.filter.export import export_target, save_generated
from distill.filter.store import DatasetStore
from distill.schemas import ScoredTrace

ConversationFormat = Literal["trl", "llamafactory", "swift"]
CONVERSATION_FORMATS: tuple[str, ...] = ("trl", "llamafactory", "swift")
Target = Literal["cot", "direct"]
IMAGE_TAG = "<image>"  # LLaMA-Factory's and ms-swift's image placeholder in a text turn
_IMAGE_SUFFIX = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"GIF8": ".gif", b"RIFF": ".webp"}


@dataclass(frozen=True)
class Conversation:
    """One kept trace as a chat: what every layout is written from."""

    trace_key: str
    sample_id: str
    system: str
    user: str
    assistant: str
    image_sha256: str
    image_bytes: bytes

    @property
    def image_name(self) -> str:
        suffix = next((s for magic, s in _IMAGE_SUFFIX.items()
                       if self.image_bytes.startswith(magic)), ".img")
        return f"images/{self.image_sha256}{suffix}"


def conversations(store: DatasetStore, version: str, target: Target) -> Iterator[Conversation]:
    """The kept traces of a version as conversations, streamed shard by shard."""
    manifest = store.manifest(version)
    folder = store.version_dir(version)
    image_root = (folder / manifest.image_root).resolve() if manifest.image_root else None
    prompt = load_prompt(target)
    for ref in manifest.shards:
        for record in iter_records(folder / ref.name, ScoredTrace):
            if record.verdict == "keep" and record.label is not None:
                system, user = prompt.render(record.sample)
                yield Conversation(
                    record.trace.trace_key, record.sample.id, system, user,
                    _assistant(record, target), record.sample.image.sha256,
                    read_image_bytes(record.sample.image, image_root))


def _assistant(record: ScoredTrace, target: Target) -> str:
    """The student's target, as `distill train` builds it for the same target."""
    if target == "cot":
        return target_text("cot", record.trace.final_answer or "", record.trace.reasoning)
    return target_text("direct", record.label or "")


def _text_messages(conv: Conversation) -> list[dict[str, str]]:
    """Plain-text turns with the image placeholder first in the user turn."""
    messages = [{"role": "user", "content": f"{IMAGE_TAG}{conv.user}"},
                {"role": "assistant", "content": conv.assistant}]
    if conv.system:
        messages.insert(0, {"role": "system", "content": conv.system})
    return messages


def _structured_messages(conv: Conversation) -> list[dict]:
    """Content-part turns, the image as a ``{"type": "image"}`` part (TRL, transformers)."""
    def text(value: str) -> list[dict]:
        return [{"type": "text", "text": value}]

    messages: list[dict] = [
        {"role": "user", "content": [{"type": "image", "text": None}, *text(conv.user)]},
        {"role": "assistant", "content": text(conv.assistant)}]
    if conv.system:
        messages.insert(0, {"role": "system", "content": text(conv.system)})
    return messages


def export_conversations(store: DatasetStore, version: str, fmt: ConversationFormat,
                         target: Target, out: Path) -> int:
    """Write the version's kept traces to the folder ``out``; returns the count."""
    writer = {"trl": _write_trl, "llamafactory": _write_llamafactory,
              "swift": _write_swift}[fmt]
    version, _ = store.open(version)
    with export_target(Path(out)) as tmp:
        tmp.mkdir()
        return writer(store, version, target, tmp)


def _write_image_once(conv: Conversation, folder: Path) -> str:
    path = folder / conv.image_name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(conv.image_bytes)
    return conv.image_name


def _path_rows(store: DatasetStore, version: str, target: Target,
               folder: Path) -> Iterator[dict]:
    for conv in conversations(store, version, target):
        yield {"id": conv.trace_key, "sample_id": conv.sample_id,
               "messages": _text_messages(conv), "images": [_write_image_once(conv, folder)]}


def _write_swift(store: DatasetStore, version: str, target: Target, folder: Path) -> int:
    count = 0
    with open(folder / "data.jsonl", "w", encoding="utf-8") as handle:
        for row in _path_rows(store, version, target, folder):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def _write_llamafactory(store: DatasetStore, version: str, target: Target,
                        folder: Path) -> int:
    count = 0
    with open(folder / "data.json", "w", encoding="utf-8") as handle:
        handle.write("[")  # one JSON list, streamed row by row
        for row in _path_rows(store, version, target, folder):
            handle.write(("," if count else "") + "\n" + json.dumps(row, ensure_ascii=False))
            count += 1
        handle.write("\n]\n")
    info = {f"distill_{version[:12]}_{target}": {
        "file_name": "data.json", "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return count


def _trl_rows(store: DatasetStore, version: str, target: Target) -> Iterator[dict]:
    for conv in conversations(store, version, target):
        yield {"id": conv.trace_key, "sample_id": conv.sample_id,
               "messages": _structured_messages(conv),
               "images": [{"bytes": conv.image_bytes, "path": None}]}


def _write_trl(store: DatasetStore, version: str, target: Target, folder: Path) -> int:
    """A `save_to_disk` folder: ``messages`` + ``images`` with the bytes embedded."""
    import datasets

    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    features = datasets.Features({
        "id": datasets.Value("string"), "sample_id": datasets.Value("string"),
        "messages": [{"role": datasets.Value("string"), "content": [part]}],
        "images": [datasets.Image()],
    })
    return save_generated(_trl_rows, {"store": store, "version": version, "target": target},
                          features, folder)
