"""Trace folders in the exact layout `distill generate` writes, for filter tests and benches.

``write_generate_dir`` takes an ingest folder and a function that returns the traces of
one sample, and writes ``traces/<split>/part-NNNNN.jsonl`` mirroring the sample shards,
plus a generate StageManifest. ``synthetic_ingest`` writes an ingest-layout folder of
many small items fast (real PNGs, varied questions) for benchmarks at scale.
"""

from __future__ import annotations

import io
import random
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from distill.core.answers import parse_output
from distill.core.shards import (
    ShardWriter,
    iter_records,
    read_json_model,
    shard_name,
    write_json_atomic,
)
from distill.schemas import (
    ImageRef,
    Rejection,
    Sample,
    SamplingParams,
    ShardRef,
    StageManifest,
    Trace,
    make_trace_key,
    sha256_hex,
)

PROMPT_HASH = sha256_hex(b"synthetic prompt template v1")


def make_trace(sample: Sample, teacher_id: str, k: int, raw_text: str, *,
               finish_reason: str = "stop", completion_tokens: int | None = None,
               final_answer: str | None = None, model: str | None = None) -> Trace:
    """A Trace as generate records it: key from the request, raw text parsed into
    reasoning + final answer with the shared parser."""
    parsed = parse_output(raw_text)
    answer = final_answer or parsed.final_answer or raw_text.strip().splitlines()[-1][:80]
    sampling = SamplingParams(temperature=0.7 if k else 0.0, max_tokens=512, seed=k)
    model = model or f"synthetic/{teacher_id}"
    return Trace(
        trace_key=make_trace_key(sample_hash=sample.content_hash(), teacher_id=teacher_id,
                                 model=model, prompt_hash=PROMPT_HASH, sampling=sampling, k=k),
        sample_id=sample.id, sample_hash=sample.content_hash(), teacher_id=teacher_id,
        engine="builtin", model=model, prompt_id="cot", prompt_hash=PROMPT_HASH,
        sampling=sampling, k=k, raw_text=raw_text, reasoning=parsed.reasoning,
        final_answer=answer, prompt_tokens=64, completion_tokens=completion_tokens,
        finish_reason=finish_reason, latency_s=0.01)


def write_generate_dir(out: Path, ingest_dir: Path,
                       traces_for: Callable[[Sample], Iterable[Trace | Rejection]]) -> Path:
    """Write every sample's traces (and rejections) in generate's layout; returns ``out``."""
    out, ingest_dir = Path(out), Path(ingest_dir).resolve()
    ingest = read_json_model(ingest_dir / "manifest.json", StageManifest)
    trace_refs, reject_refs, counts = [], [], {"traces": 0, "rejected": 0}
    for ref in sorted(ingest.shards, key=lambda r: r.name):
        _, split, name = ref.name.split("/")
        traces = ShardWriter(out / "traces" / split / name, flush_every=4096)
        rejects: ShardWriter | None = None
        for sample in iter_records(ingest_dir / ref.name, Sample):
            for record in traces_for(sample):
                if isinstance(record, Rejection):
                    rejects = rejects or ShardWriter(out / "rejects" / split / name)
                    rejects.write(record)
                    counts["rejected"] += 1
                else:
                    traces.write(record)
                    counts["traces"] += 1
        committed = traces.commit()
        trace_refs.append(committed.model_copy(update={"name": f"traces/{split}/{name}"}))
        if rejects is not None:
            committed = rejects.commit()
            reject_refs.append(committed.model_copy(update={"name": f"rejects/{split}/{name}"}))
    image_root = (ingest_dir / (ingest.image_root or ".")).resolve()
    manifest = StageManifest(stage="generate", created_at=datetime.now(UTC),
                             image_root=str(image_root), inputs=ingest.shards,
                             input_dir=str(ingest_dir), shards=trace_refs, rejects=reject_refs,
                             counts=counts, config={"synthetic": True})
    write_json_atomic(out / "manifest.json", manifest)
    return out


# --- a synthetic ingest folder, fast, at scale ---------------------------------------------

_OBJECTS = ["apple", "bird", "car", "chair", "cup", "dog", "flower", "key", "lamp", "book",
            "coin", "shoe", "star", "tree", "clock", "ball", "hat", "boat", "bell", "kite"]
_COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey",
           "brown", "pink", "teal"]
_PLACES = ["on the table", "in the box", "near the window", "on the shelf", "in the corner",
           "next to the door", "under the chair", "on the left", "on the right", "at the top"]


def _png(rng: np.random.Generator, side: int = 12) -> bytes:
    """Noise (incompressible): a ``side`` x ``side`` grey PNG of about side**2 bytes."""
    pixels = rng.integers(0, 255, size=(side, side), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_item(index: int, rng: random.Random) -> dict:
    """A counting / arithmetic item about objects in a scene (question, answer, facts)."""
    objects = rng.sample(_OBJECTS, rng.randint(2, 4))
    counts = {o: rng.randint(1, 9) for o in objects}
    colors = {o: rng.choice(_COLORS) for o in objects}
    places = {o: rng.choice(_PLACES) for o in objects}
    kind = rng.choice(["total", "difference", "product"])
    a, b = objects[0], objects[1]
    if kind == "total":
        question = f"How many objects are there in total, counting every {' and '.join(objects)}?"
        answer = sum(counts.values())
    elif kind == "difference":
        question = f"How many more {a}s than {b}s are there in the picture?"
        answer = counts[a] - counts[b]
    else:
        question = f"If every {a} were paired with every {b}, how many pairs would there be?"
        answer = counts[a] * counts[b]
    return {"objects": objects, "counts": counts, "colors": colors, "places": places,
            "kind": kind, "question": question, "answer": answer}


def synthetic_ingest(out: Path, items: int, *, shard_size: int = 500, seed: int = 0,
                     image_side: int = 12) -> Path:
    """An ingest-layout folder of ``items`` synthetic items with real, distinct PNGs
    (``image_side`` pixels a side: 12 is tiny; 160 is ~26 KB, a small real image)."""
    out = Path(out)
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    refs = []
    writer: ShardWriter | None = None
    for index in range(items):
        if index % shard_size == 0:
            if writer is not None:
                refs.append(_commit(writer, out))
            writer = ShardWriter(out / "samples" / "train" / shard_name(index // shard_size),
                                 flush_every=8192)
        item = synthetic_item(index, rng)
        data = _png(np_rng, image_side)
        digest = sha256_hex(data)
        path = f"images/{digest[:2]}/{digest}.png"
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(data)
        assert writer is not None
        writer.write(Sample(id=f"syn-{index:07d}", image=ImageRef(path=path, sha256=digest),
                            question=item["question"], answer=str(item["answer"]),
                            answer_type="number", category=item["kind"], source="synthetic",
                            split="train", meta={"facts": {k: item[k] for k in
                                                           ("objects", "counts", "colors",
                                                            "places")}}))
    if writer is not None:
        refs.append(_commit(writer, out))
    manifest = StageManifest(stage="ingest", created_at=datetime.now(UTC), image_root=".",
                             shards=refs, counts={"samples": items})
    write_json_atomic(out / "manifest.json", manifest)
    return out


def _commit(writer: ShardWriter, root: Path) -> ShardRef:
    ref = writer.commit()
    return ref.model_copy(update={"name": writer.final_path.relative_to(root).as_posix()})


# --- realistic teacher traces with planted faults and near-duplicates ---------------------

_INTROS = [
    "Let me look at the picture carefully and count each kind of object.",
    "First I will list what is visible in the image, then do the arithmetic.",
    "I need to identify every object in the scene before answering.",
    "Looking at the image, I can see several groups of objects.",
    "To answer this I should count the relevant objects one group at a time.",
    "The question asks about quantities, so I will start by counting.",
]
_FILLERS = [
    "Let me double-check that count by scanning the image again from left to right.",
    "Some of them overlap slightly, so I counted the edges separately.",
    "I will ignore the background and focus on the objects themselves.",
    "Counting them in pairs makes it easier to avoid mistakes.",
    "None of them appear to be hidden behind other objects.",
    "The lighting makes one of them hard to see, but it is still there.",
    "I should be careful not to count the reflection as a separate object.",
    "Grouping them by color confirms the same number.",
    "Going around the edge of the picture, I do not see any more of them.",
    "That matches what I counted the first time.",
    "It helps to point at each one while counting.",
    "The shapes are distinct enough that there is no ambiguity here.",
]
_DESCRIBE = [
    "There are {n} {color} {obj}s {place}.",
    "I count {n} {obj}s {place}, all of them {color}.",
    "{place_cap} I can see {n} {color} {obj}s.",
    "The {color} {obj}s {place} number {n} in total.",
    "Next, the {obj}s: there are {n} of them, {color}, {place}.",
]
_REFUSALS = [
    "I'm sorry, but I cannot see the image you are referring to.",
    "As an AI language model, I am unable to view images directly.",
]
_VOCAB = ["quickly", "indeed", "perhaps", "clearly", "roughly", "exactly", "simply", "also",
          "still", "again", "maybe", "surely", "later", "first", "then", "now"]


def _plural(n: int) -> str:
    return str(n)


def teacher_reasoning(item: dict, rng: random.Random, style: int) -> str:
    """A step-by-step reasoning text for a synthetic item; varies with rng and style."""
    objects = list(item["objects"])
    rng.shuffle(objects)
    sentences = [_INTROS[(style + rng.randrange(3)) % len(_INTROS)]]
    for obj in objects:
        place = item["places"][obj]
        template = rng.choice(_DESCRIBE)
        sentences.append(template.format(n=item["counts"][obj], color=item["colors"][obj],
                                         obj=obj, place=place,
                                         place_cap=place[0].upper() + place[1:] + ","))
        if rng.random() < 0.6:
            sentences.append(rng.choice(_FILLERS))
    counts = item["counts"]
    a, b = item["objects"][0], item["objects"][1]
    if item["kind"] == "total":
        parts = " + ".join(str(counts[o]) for o in item["objects"])
        sentences.append(f"Adding all the groups together: {parts} = {item['answer']}.")
    elif item["kind"] == "difference":
        sentences.append(f"There are {counts[a]} {a}s and {counts[b]} {b}s, so the difference "
                         f"is {counts[a]} - {counts[b]} = {item['answer']}.")
    else:
        sentences.append(f"Each of the {counts[a]} {a}s can pair with each of the {counts[b]} "
                         f"{b}s, which gives {counts[a]} x {counts[b]} = {item['answer']} pairs.")
    for _ in range(rng.randint(2, 6)):
        sentences.insert(rng.randint(1, len(sentences) - 1), rng.choice(_FILLERS))
    check = rng.choice(item["objects"])
    sentences.append(f"To verify, I recount the {check}s {item['places'][check]} one by one and "
                     f"get {item['counts'][check]} again, so the counts above are consistent.")
    sentences.append(f"The question asks: {item['question']} Based on the counts I found, "
                     f"the answer is {item['answer']}.")
    return " ".join(sentences)


def perturb(text: str, rng: random.Random, edits: int) -> str:
    """A near-duplicate: a few words replaced, plus case and punctuation noise."""
    words = text.split(" ")
    for _ in range(edits):
        position = rng.randrange(len(words))
        words[position] = rng.choice(_VOCAB)
    if rng.random() < 0.5:
        words = [w.upper() if rng.random() < 0.05 else w for w in words]
    out = " ".join(words)
    return out.replace(",", " ,") if rng.random() < 0.5 else out.replace(".", "!")


def realistic_traces(teachers: tuple[str, ...] = ("teacher-a", "teacher-b"), k: int = 4,
                     dup_rate: float = 0.05, seed: int = 0,
                     planted: list[tuple[str, str]] | None = None
                     ) -> Callable[[Sample], list[Trace]]:
    """Per sample: k traces per teacher, with realistic faults (wrong answers, truncation,
    loops, refusals, tag soup, garbage) and planted near-duplicates: copies of another
    trace of the same item with 1-3 words changed and punctuation/case noise. The
    (copy, original) trace keys go into ``planted``."""

    def traces_for(sample: Sample) -> list[Trace]:
        rng = random.Random(f"{seed}:{sample.id}")
        facts = sample.meta["facts"]
        item = {**facts, "kind": sample.category, "answer": sample.answer,
                "question": sample.question}
        out: list[Trace] = []
        texts: list[str] = []
        for t_index, teacher in enumerate(teachers):
            for sample_k in range(k):
                reasoning = teacher_reasoning(item, rng, style=t_index * 2 + sample_k)
                answer, finish, roll = sample.answer, "stop", rng.random()
                if roll < 0.08:
                    answer = str(int(sample.answer) + rng.choice([-2, -1, 1, 2]))
                text = f"<think>\n{reasoning}\n</think>\nAnswer: {answer}"
                if 0.08 <= roll < 0.10:
                    text, finish = text[: len(text) // 2], "length"
                elif 0.10 <= roll < 0.11:
                    text = text.replace("</think>", "") + " " + " ".join(
                        ["Let me count again."] * 12) + "\nAnswer: " + answer
                elif 0.11 <= roll < 0.12:
                    text = rng.choice(_REFUSALS) + f"\nAnswer: {answer}"
                elif 0.12 <= roll < 0.13:
                    text = f"<think><think>{reasoning}</thinking>\nAnswer: {answer}"
                elif 0.13 <= roll < 0.135:
                    text = text + " " + "\ufffd\x07" * 40
                if rng.random() < dup_rate and texts:
                    source_index = rng.randrange(len(texts))
                    text = perturb(texts[source_index], rng, edits=rng.randint(1, 3))
                    finish = "stop"
                    out.append(make_trace(sample, teacher, sample_k, text,
                                          completion_tokens=len(text) // 4))
                    if planted is not None:
                        planted.append((out[-1].trace_key, out[source_index].trace_key))
                else:
                    out.append(make_trace(sample, teacher, sample_k, text,
                                          finish_reason=finish,
                                          completion_tokens=len(text) // 4))
                texts.append(text)
        return out

    return traces_for


def filter_command(gen: Path, store: Path) -> list[str]:
    """`distill filter` of a generate folder into a store, as a subprocess runs it."""
    return [sys.executable, "-m", "distill", "filter", "--traces", str(gen), "--store",
            str(store)]
