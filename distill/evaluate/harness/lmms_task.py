"""Writing one of our eval sets as an lmms-eval task over local files (no Hub).

``distill eval lmms-task --data work/digits --out tasks/`` writes::

    tasks/distill_digits_test_cot.yaml     the task (dataset_path: json, data_files: the JSONL)
    tasks/distill_digits_test_cot.jsonl    one doc per item, in eval-set order (doc_id = order)
    tasks/distill_task_utils.py            doc_to_messages, process_results: plain Python
    tasks/images/                          only for items whose image is stored inline

then ``lmms-eval --include_path tasks --tasks distill_digits_test_cot --model ...``. The task
format is lmms-eval's YAML task config (lmms_eval/api/task.py ``TaskConfig``; ``!function
module.name`` resolved beside the YAML; EvolvingLMMs-Lab/lmms-eval v0.7.2 cb45ac4d).

Paths in the task are absolute (the JSONL, the images): after moving the eval set, write the
task again. Each doc holds the prompt our ``--mode`` uses (system and user text, rendered from
prompts/<mode>.yaml), the image's absolute path, the gold answer, and the Sample record
itself (``distill_sample``), so the SiQ-VL adapter asks the student exactly what ``distill
eval`` asks it. The task scores itself with a small self-contained exact match (the last
"Answer:" line, a choice letter, a number, yes/no); ``distill eval import`` re-judges every
output with our judge and keeps this score beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.core.evalsets import EvalSet, require_gold
from distill.core.images import image_format_suffix, read_image_bytes, resolve_image_path
from distill.core.paths import slug
from distill.core.predictors import Mode, mode_prompt
from distill.core.shards import write_bytes_atomic
from distill.schemas import Sample

UTILS_MODULE = "distill_task_utils"
METRIC = "distill_exact_match"


def task_name(eval_set: EvalSet, mode: Mode) -> str:
    return f"distill_{slug(eval_set.name)}_{mode}"


def write_lmms_task(eval_set: EvalSet, out: Path, *, mode: Mode = "cot",
                    name: str | None = None, max_new_tokens: int = 512) -> Path:
    """Write the task files under ``out``; returns the YAML's path (written last, so a task
    that lmms-eval can see is complete)."""
    require_gold(eval_set)
    name = name or task_name(eval_set, mode)
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    prompt = mode_prompt(mode)
    lines = []
    for sample in eval_set.samples:
        system, user = prompt.render(sample)
        lines.append(json.dumps({
            "sample_id": sample.id, "question": user, "system": system,
            "answer": sample.answer, "answer_type": sample.answer_type,
            "choices": sample.choices, "category": sample.category,
            "image_path": str(_image_file(sample, eval_set, out)),
            "distill_sample": sample.model_dump_json(),
            "distill_image_root": str(eval_set.image_root) if eval_set.image_root else None,
            "distill_mode": mode,
        }, ensure_ascii=False))
    data_file = out / f"{name}.jsonl"
    write_bytes_atomic(data_file, ("\n".join(lines) + "\n").encode("utf-8"))
    write_bytes_atomic(out / f"{UTILS_MODULE}.py", TASK_UTILS.encode("utf-8"))
    yaml_file = out / f"{name}.yaml"
    write_bytes_atomic(yaml_file, _task_yaml(name, data_file, eval_set, mode, prompt.id,
                                             prompt.hash, max_new_tokens).encode("utf-8"))
    return yaml_file


def _image_file(sample: Sample, eval_set: EvalSet, out: Path) -> Path:
    """The image as a file lmms-eval can open: the eval set's own file, or (inline images)
    a copy under out/images/ named by its hash."""
    if sample.image.path is not None and eval_set.image_root is not None:
        return resolve_image_path(eval_set.image_root, sample.image.path)
    data = read_image_bytes(sample.image, eval_set.image_root)
    path = out / "images" / f"{sample.image.sha256}{image_format_suffix(data)}"
    if not path.is_file():
        write_bytes_atomic(path, data)
    return path


def _task_yaml(name: str, data_file: Path, eval_set: EvalSet, mode: Mode, prompt_id: str,
               prompt_hash: str, max_new_tokens: int) -> str:
    q = json.dumps  # a JSON string is a YAML string, quoted and escaped
    return f"""\
# Written by `distill eval lmms-task` from the eval set {eval_set.spec}
# ({len(eval_set.samples)} items, hash {eval_set.hash[:12]}), {mode} prompt.
task: {q(name)}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {q(str(data_file))}
test_split: test
output_type: generate_until
doc_to_visual: !function {UTILS_MODULE}.doc_to_visual
doc_to_text: !function {UTILS_MODULE}.doc_to_text
doc_to_messages: !function {UTILS_MODULE}.doc_to_messages
doc_to_target: answer
process_results: !function {UTILS_MODULE}.process_results
metric_list:
  - metric: {METRIC}
    aggregation: !function {UTILS_MODULE}.mean_score
    higher_is_better: true
generation_kwargs:
  max_new_tokens: {int(max_new_tokens)}
  temperature: 0
  do_sample: false
metadata:
  version: 0
  distill_eval_set: {q(eval_set.spec)}
  distill_eval_set_hash: {q(eval_set.hash)}
  distill_mode: {q(mode)}
  distill_prompt: {q(f"{prompt_id}@{prompt_hash[:12]}")}
"""


# The task's own functions: plain Python and PIL, so the task runs in any lmms-eval install.
TASK_UTILS = '''\
"""Functions of the tasks `distill eval lmms-task` writes (see their YAML)."""

import re

from PIL import Image

_ANSWER = re.compile(r"answer\\s*[:\\uff1a]\\s*(.+)", re.IGNORECASE)
_LETTER = re.compile(r"^\\(?([A-Za-z])\\)?(?:[.:)]|\\s|$)")


def doc_to_visual(doc):
    return [Image.open(doc["image_path"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_messages(doc, lmms_eval_specific_kwargs=None):
    messages = []
    if doc.get("system"):
        messages.append({"role": "system", "content": [{"type": "text", "text": doc["system"]}]})
    messages.append({"role": "user", "content": [
        {"type": "image", "url": doc_to_visual(doc)[0]},
        {"type": "text", "text": doc["question"]}]})
    return messages


def extract_answer(text):
    """The text after the last 'Answer:' line, else the last non-empty line."""
    found = _ANSWER.findall(text or "")
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _number(text):
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def is_correct(doc, answer):
    answer = answer.strip().strip("*").strip()
    gold = doc["answer"]
    kind = doc["answer_type"]
    if kind == "choice":
        letter = _LETTER.match(answer)
        if letter:
            return letter.group(1).upper() == gold
        choices = doc.get("choices") or []
        texts = [c.strip().lower() for c in choices]
        return answer.rstrip(".").lower() in texts and \\
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[texts.index(answer.rstrip(".").lower())] == gold
    if kind == "number":
        a, b = _number(answer), _number(gold)
        return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if kind == "yes_no":
        return answer.lower().rstrip(".").split(" ")[0] == gold
    return " ".join(answer.lower().rstrip(".").split()) == " ".join(gold.lower().split())


def process_results(doc, results):
    answer = extract_answer(results[0])
    score = 1.0 if is_correct(doc, answer) else 0.0
    return {"distill_exact_match": {"sample_id": doc["sample_id"], "category": doc["category"],
                                    "extracted": answer, "score": score}}


def mean_score(results):
    return sum(result["score"] for result in results) / max(1, len(results))
'''
