"""Files shaped like what lmms-eval and VLMEvalKit write, built the way their writers build
them (cited per function), over a small multiple-choice eval set of our own.

The model outputs in these files are fixed texts standing for what some model answered; the
tests check how we read, match and judge them, not any model.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from distill.schemas import ImageRef, Sample
from tests.conftest import png_bytes

# (MMStar-style index, question stem, options, gold letter, category, l2 category)
ITEMS = [
    (101, "Which animal is in the picture?", ["cat", "dog", "bird", "fish"], "B",
     "coarse perception", "image scene and topic"),
    (102, "What colour is the car?", ["red", "blue", "green", "black"], "A",
     "fine-grained perception", "attribute recognition"),
    (103, "How many people are there?", ["one", "two", "three", "four"], "C",
     "instance reasoning", "single-instance reasoning"),
    (104, "Where is the ball?", ["left", "right", "top", "bottom"], "D",
     "logical reasoning", "diagram reasoning"),
]
LETTERS = "ABCD"


def write_eval_set(folder: Path) -> Path:
    """Our eval set: a JSONL of Samples as `distill eval convert mmstar` names them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for seed, (index, stem, options, gold, category, l2) in enumerate(ITEMS):
        data = png_bytes(seed)
        sample = Sample(id=f"mmstar-{index}", question=stem, choices=options, answer=gold,
                        answer_type="choice", category=category.replace(" ", "_"),
                        source="mmstar", split="test",
                        image=ImageRef.inline(data, hashlib.sha256(data).hexdigest()),
                        meta={"source_id": str(index), "category": category,
                              "l2_category": l2})
        lines.append(sample.model_dump_json())
    path = folder / "mmstar.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mmstar_question(index: int) -> str:
    """The question as MMStar's own rows hold it: stem, then 'Options: A: .., B: ..'."""
    _, stem, options, *_ = next(item for item in ITEMS if item[0] == index)
    listed = ", ".join(f"{letter}: {text}" for letter, text in zip(LETTERS, options,
                                                                    strict=True))
    return f"{stem}\nOptions: {listed}"


def lmms_run_07(output_path: Path, outputs: dict[int, str], *, task: str = "mmstar",
                model: str = "qwen2_5_vl", date: str = "20260801_101500",
                scores: dict[int, float] | None = None) -> Path:
    """An lmms-eval 0.7.x --log_samples run (EvolvingLMMs-Lab/lmms-eval v0.7.2 cb45ac4d):
    lmms_eval/evaluator.py logs {doc_id, doc, target, arguments, resps, filtered_resps,
    token_counts, doc_hash} + the metrics of mmstar/utils.py mmstar_process_results;
    loggers/evaluation_tracker.py save_results_samples sets input, flattens the single
    response to a string, drops resps when equal, pops arguments and doc, and appends the
    lines to {output_path}/{model}/{date}_samples_{task}.jsonl."""
    folder = output_path / model
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for doc_id, (index, _, _, gold, category, l2) in enumerate(ITEMS):
        if index not in outputs:
            continue
        text = outputs[index]
        score = (scores or {}).get(index, 1.0 if text.strip().endswith(gold) else 0.0)
        detail = {"question_id": index, "l2_category": l2, "score": score}
        lines.append(json.dumps({
            "doc_id": doc_id, "target": gold, "filtered_resps": text,
            "token_counts": [{"output_tokens": len(text.split())}],
            "doc_hash": hashlib.sha256(str(index).encode()).hexdigest(),
            category: detail, "average": detail,
            "input": mmstar_question(index) + "\nAnswer with the option's letter from the "
                                              "given choices directly.",
        }, ensure_ascii=False))
    samples = folder / f"{date}_samples_{task}.jsonl"
    samples.write_text("\n".join(lines) + "\n", encoding="utf-8")
    metric_list = [{"metric": category, "aggregation": "<function mmstar_aggregate_results>",
                    "higher_is_better": True} for category in
                   ("coarse perception", "fine-grained perception", "instance reasoning",
                    "logical reasoning")] + [{"metric": "average",
                                              "aggregation": "<function mmstar_aggregate>",
                                              "higher_is_better": True}]
    (folder / f"{date}_results.json").write_text(json.dumps({
        "results": {task: {"alias": task, "average,none": 0.5}},
        "configs": {task: {"task": task, "dataset_path": "Lin-Chen/MMStar",
                           "metric_list": metric_list}},
        "config": {"model": model, "model_args": "pretrained=Qwen/Qwen2.5-VL-3B-Instruct"},
        "lmms_eval_version": "main@75571cfe", "date": date,
    }, indent=2), encoding="utf-8")
    return folder


def lmms_run_03(output_path: Path, outputs: list[str], *, task: str = "mmstar",
                model: str = "llava", date: str = "20250101_120000") -> Path:
    """An lmms-eval 0.3.x run (v0.3.5 f7a6d6bf): evaluator.py logs doc (without image
    fields), target, arguments, resps [[text]], filtered_resps [text], doc_hash,
    prompt_hash, target_hash and the metrics (here a plain number); the tracker turns
    arguments into {index: gen_kwargs key} and keeps doc. No item ids: rows match by doc_id."""
    folder = output_path / model
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for doc_id, text in enumerate(outputs):
        index, _, _, gold, category, l2 = ITEMS[doc_id]
        doc = {"question": mmstar_question(index), "answer": gold, "category": category,
               "l2_category": l2}
        prompt = doc["question"] + "\nAnswer with the option's letter."
        lines.append(json.dumps({
            "doc_id": doc_id, "doc": doc, "target": gold,
            "arguments": {"0": "max_new_tokens", "1": "temperature"},
            "resps": [[text]], "filtered_resps": [text],
            "doc_hash": "0" * 64, "prompt_hash": "1" * 64, "target_hash": "2" * 64,
            "exact_match": 1.0 if text.strip().endswith(gold) else 0.0, "input": prompt,
        }))
    (folder / f"{date}_samples_{task}.jsonl").write_text("\n".join(lines) + "\n",
                                                          encoding="utf-8")
    return folder


def vlm_rows(outputs: dict[int, str]) -> list[dict]:
    """VLMEvalKit MMStar rows (the dataset's TSV columns without image) + prediction."""
    rows = []
    for index, stem, options, gold, category, l2 in ITEMS:
        if index in outputs:
            rows.append({"index": index, "question": stem, **dict(zip(LETTERS, options,
                                                                          strict=True)),
                         "answer": gold, "category": category, "l2_category": l2,
                         "prediction": outputs[index]})
    return rows


def write_xlsx(path: Path, rows: list[dict]) -> Path:
    """Like vlmeval/smp/file.py dump_xlsx (pandas to_excel, index=False): a header row, then
    one row per record."""
    import openpyxl

    path.parent.mkdir(parents=True, exist_ok=True)
    book = openpyxl.Workbook()
    sheet = book.active
    header = list(rows[0])
    sheet.append(header)
    for row in rows:
        sheet.append([row.get(name) for name in header])
    book.save(path)
    return path


def write_tsv(path: Path, rows: list[dict]) -> Path:
    """Like dump_tsv (pandas to_csv, sep tab, QUOTE_ALL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t",
                                quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return path


def judged(rows: list[dict], hits: dict[int, int]) -> list[dict]:
    """The MCQ judged record (vlmeval/dataset/image_mcq.py: {stem}_{judge}_result): the
    prediction rows plus hit and log."""
    return [{**row, "hit": hits[row["index"]], "log": "exact matching"} for row in rows]
