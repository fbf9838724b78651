"""The SiQ-VL student inside lmms-eval, in the separate lmms environment
(``bash .ci/setup_lmms_env.sh``; everywhere else these tests skip: lmms-eval is not
importable).

A tiny student is trained on digits in seconds, scored by ``distill eval`` and, through a
task ``distill eval lmms-task`` writes, by ``lmms-eval --model siqvl`` (found through our
``lmms_eval.models`` entry point); the samples file is imported back and compared with the
``distill eval`` result: under greedy decoding every response is the same text, and every
item where lmms-eval's own score and our judge disagree is listed with its reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lmms_eval")

from distill.cli import main  # noqa: E402
from distill.core.shards import read_json_model  # noqa: E402
from distill.evaluate.agreement import harness_agreement  # noqa: E402
from distill.evaluate.compare import load_results  # noqa: E402
from distill.evaluate.lineage import trace_lineage  # noqa: E402
from distill.schemas import EvalResult  # noqa: E402

pytestmark = pytest.mark.lmms

MAX_NEW = 40


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> dict[str, Path]:
    from tests.train_support import tiny_trained_student

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_trained_student(tmp_path_factory.mktemp("lmms"))
    torch.set_num_threads(previous)


def test_registered_through_the_entry_point() -> None:
    from lmms_eval.models import get_model, get_model_manifest

    manifest = get_model_manifest("siqvl")
    assert manifest.chat_class_path == "distill.train.lmms_model.SiqvlChat"
    cls = get_model("siqvl")
    assert cls.__name__ == "SiqvlChat" and cls.is_simple is False


def test_student_in_lmms_eval_matches_distill_eval(student, capsys) -> None:
    root, run, ingest = student["root"], student["run"], student["ingest"]
    ours = root / "ours"
    assert main(["eval", "--model", f"siqvl:{run}", "--data", str(ingest), "--out", str(ours),
                 "--no-cache", "--max-new-tokens", str(MAX_NEW), "--batch-size", "8",
                 "--threads", "1"]) == 0
    assert main(["eval", "lmms-task", "--data", str(ingest), "--out", str(root / "tasks"),
                 "--max-new-tokens", str(MAX_NEW)]) == 0
    task = "distill_ingest_test_cot"
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "siqvl", "--model_args",
         f"pretrained={run},threads=1", "--include_path", str(root / "tasks"), "--tasks", task,
         "--batch_size", "8", "--log_samples", "--output_path", str(root / "lmms_out")],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    samples = list((root / "lmms_out").glob(f"*/*_samples_{task}.jsonl"))
    assert len(samples) == 1
    logged = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert [row["doc_id"] for row in logged] == list(range(8))

    imported = root / "imported"
    assert main(["eval", "import", "lmms-eval", str(root / "lmms_out"), "--data", str(ingest),
                 "--out", str(imported)]) == 0
    ours_file = next(ours.glob("*.json"))
    theirs_file = next(imported.glob("*.json"))
    a = read_json_model(ours_file, EvalResult)
    b = read_json_model(theirs_file, EvalResult)
    # The harness ran our checkpoint: the import records it, so lineage reaches the run.
    assert b.model.kind == "harness" and b.model.fingerprint == a.model.fingerprint
    # Relative to the result's folder, like every path a result names.
    assert (imported / b.model.run_manifest).resolve() == (run / "manifest.json").resolve()
    # Greedy decoding, the same prompt and generation code: the same text for every item.
    assert [i.sample_id for i in b.items] == [i.sample_id for i in a.items]
    assert [i.raw_output for i in b.items] == [i.raw_output for i in a.items]
    assert [i.correctness for i in b.items] == [i.correctness for i in a.items]
    assert all(item.harness.metric == "distill_exact_match" for item in b.items)
    assert [item.output_tokens for item in b.items] == [item.output_tokens for item in a.items]

    capsys.readouterr()
    assert main(["compare", str(ours_file), str(theirs_file), "--out",
                 str(root / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "identical outputs on 8 of 8 items" in " ".join(printed.split())
    agreement = harness_agreement(load_results([theirs_file])[0])
    assert agreement is not None and agreement.scored == 8
    markdown = (root / "cmp" / "compare.md").read_text()
    assert f"disagree on {len(agreement.disagreements)}." in markdown
    for disagreement in agreement.disagreements:  # each shown, with its reason
        assert f"| {disagreement.item.sample_id} |" in markdown
        assert disagreement.reason.split(":")[0] in markdown
    statuses = {link.kind: link.status for link in trace_lineage(theirs_file)}
    assert statuses["model"] == "ok" and statuses["run"] == "ok"


def test_any_single_image_chat_task_is_asked_with_the_students_prompt(student) -> None:
    """A task that is not ours: the messages' text becomes the question, their image the
    image, and the student answers as generate_answers does for that Sample."""
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from distill.core.errors import DistillError
    from distill.core.evalsets import load_eval_set
    from distill.train.inference import generate_answers
    from distill.train.lmms_model import SiqvlChat, sample_from_messages

    eval_set = load_eval_set(student["ingest"])
    sample = eval_set.samples[0]
    image = Image.open(eval_set.image_root / sample.image.path).convert("RGB")
    doc = {"question": sample.question}

    def doc_to_messages(doc: dict) -> list[dict]:
        return [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image", "url": image},
                                             {"type": "text", "text": doc["question"]}]}]

    model = SiqvlChat(pretrained=str(student["run"]), batch_size=2, threads=1)
    model.task_dict = {"foreign": {"test": [doc]}}
    request = Instance(request_type="generate_until", idx=0,
                       arguments=("ctx", doc_to_messages, {"max_new_tokens": 12}, 0,
                                  "foreign", "test"),
                       metadata={"task": "foreign", "doc_id": 0, "repeats": 1})
    (answer,) = model.generate_until([request])
    asked = sample_from_messages(doc_to_messages(doc), "foreign-0")
    assert asked.question == sample.question  # the system turn is not part of the question
    (expected,) = generate_answers(model.model, model.processor, [asked], None, mode="cot",
                                   max_new_tokens=12, batch_size=2)
    assert answer.text == expected[0] and answer.token_counts.output_tokens == expected[1]

    two_images = [{"role": "user", "content": [{"type": "image", "url": image},
                                               {"type": "image", "url": image},
                                               {"type": "text", "text": "Compare."}]}]
    with pytest.raises(DistillError, match="single-image questions; x holds 2 images"):
        sample_from_messages(two_images, "x")
