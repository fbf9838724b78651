"""Issue 34's hostile and unlucky cases for the store, exports, policies, eval options, result
files, lineage and names, tried as a user meets them, and counted: held, broke, lost.

Each case sets up a project (a digits ingest folder, scripted teachers' traces, a dataset
store with two versions; for lineage a real 2-step student trained on a version and
evaluated by `distill eval`), spoils or asks one thing, runs the real CLI in this process,
and says what happened:

* held  -- exit 0 with the right outcome, or exit 2 with exactly one `error:` line (a usage
           error: one `Error:` line) and no traceback, and the case's promise kept;
* broke -- a traceback, another exit code, two lines, or a silent wrong answer;
* lost  -- data was lost or damaged content was used as if whole (an export, a training
           set, a diff, a verify or a lineage `ok` of content edited after publishing).

    python bench/hostile_store_eval.py                 # every case (~3 min on 2 cores)
    python bench/hostile_store_eval.py --no-lineage    # without training a student
    PYTHONPATH=/path/to/other/checkout python bench/hostile_store_eval.py   # other code

The last line is the headline: ``tried N, held H, broke B, lost L``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))  # after PYTHONPATH: another checkout's code wins

import distill  # noqa: E402

CODE = Path(distill.__file__).resolve().parents[1]  # the checkout whose code runs
os.environ.setdefault("DISTILL_PROGRESS", "0")

from distill.cli import main  # noqa: E402

Outcome = tuple[str, str]  # ("held" | "broke" | "lost", note)
CASES: list[tuple[str, str, Callable[[Path], Outcome]]] = []


def case(group: str, name: str):  # noqa: ANN201 - a decorator
    def register(function: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
        CASES.append((group, name, function))
        return function
    return register


def cli(*args: object) -> tuple[int | str, str, str]:
    """(exit code, stdout, stderr) of the CLI; a traceback is code 'traceback'."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    except BaseException:  # noqa: BLE001 - the point is to see it
        return "traceback", out.getvalue(), err.getvalue() + traceback.format_exc()
    return code, out.getvalue(), err.getvalue()


def one_line(code: int | str, err: str, *must: str) -> bool:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "Error:"))]
    return (code == 2 and len(lines) == 1 and "Traceback" not in err
            and all(text in lines[0] for text in must))


def refused(code: int | str, err: str, *must: str, lost_if_ok: bool = False) -> Outcome:
    if one_line(code, err, *must):
        return "held", ""
    if code == 0 and lost_if_ok:
        return "lost", "accepted damaged content"
    if code == 0:
        return "broke", "accepted silently"
    return "broke", f"exit {code}: {err.strip().splitlines()[-1][:160] if err.strip() else ''}"


# --- the project ---------------------------------------------------------------------------


def png_bytes(seed: int) -> bytes:
    """A small real PNG, distinct per seed."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def traces_for(sample):  # noqa: ANN001, ANN201 - a Sample in, Traces out
    """Two scripted teachers, two samples each, reading the real digits (all correct)."""
    from distill.core.digits import digits_of
    from testing.filter_data import make_trace

    digits = ", ".join(str(d) for d in digits_of(sample))
    return [make_trace(sample, teacher, k, f"<think>\n{opener} {digits}; {k} so the answer "
                       f"follows from them step by step.\n</think>\nAnswer: {sample.answer}")
            for teacher, opener in (("alpha", "The image shows the digits"),
                                    ("beta", "Reading each cell of the grid, I see"))
            for k in range(2)]


def build(root: Path) -> Path:
    from testing.filter_data import write_generate_dir
    from testing.generate import make_ingest

    make_ingest(root / "ingest", {"train": 12, "test": 4}, shard_size=6)
    write_generate_dir(root / "gen", root / "ingest", traces_for)
    (root / "every-split.yaml").write_text("name: every-split\nsplits: null\n")
    for extra in ([], ["--policy", root / "every-split.yaml"]):
        code, _, err = cli("filter", "--traces", root / "gen", "--store", root / "store",
                           *extra)
        assert code == 0, err
    return root


def versions(root: Path) -> list[str]:
    found = []
    for folder in (root / "store" / "versions").iterdir():
        manifest = json.loads((folder / "manifest.json").read_text())
        found.append((manifest["created_at"], folder.name))
    return [name for _, name in sorted(found)]


def writable(path: Path) -> Path:
    path.chmod(0o644)
    return path


def edit_shard(root: Path, version: str, update_manifest: bool = False) -> None:
    from distill.schemas import file_sha256

    folder = root / "store" / "versions" / version
    shard = writable(folder / "data" / "part-00000.jsonl")
    shard.write_text(shard.read_text().replace('"final_answer":"', '"final_answer":"9', 1))
    if update_manifest:
        manifest_path = writable(folder / "manifest.json")
        manifest = json.loads(manifest_path.read_text())
        manifest["shards"][0]["sha256"] = file_sha256(shard)
        manifest_path.write_text(json.dumps(manifest))


def store_cli(root: Path, *args: object) -> tuple[int | str, str, str]:
    return cli("datasets", "--store", root / "store", *args)


# --- store and export ------------------------------------------------------------------------


def _export_edited(fmt: str, update_manifest: bool = False) -> Callable[[Path], Outcome]:
    def run(root: Path) -> Outcome:
        version = versions(root)[0]
        edit_shard(root, version, update_manifest)
        code, _, err = store_cli(root, "export", version, "--format", fmt, "--out",
                                 root / f"x-{fmt}")
        return refused(code, err, lost_if_ok=True)
    return run


for _fmt in ("jsonl", "parquet", "hf", "swift", "trl", "llamafactory"):
    case("store_export", f"export {_fmt} of a version whose data shard was edited")(
        _export_edited(_fmt))
case("store_export", "export jsonl after an edit whose hash was written into the manifest")(
    _export_edited("jsonl", update_manifest=True))


@case("store_export", "verify after an edit whose hash was written into the manifest")
def _(root: Path) -> Outcome:
    version = versions(root)[0]
    edit_shard(root, version, update_manifest=True)
    code, _, err = store_cli(root, "verify", version)
    return refused(code, err, lost_if_ok=True)


@case("store_export", "train's dataset read after an edit whose hash was written in")
def _(root: Path) -> Outcome:
    from distill.core.errors import DistillError
    from distill.train.data import load_training_set

    version = versions(root)[0]
    edit_shard(root, version, update_manifest=True)
    try:
        load_training_set(root / "store" / "versions" / version)
    except DistillError:
        return "held", ""
    except Exception as exc:  # noqa: BLE001
        return "broke", repr(exc)[:160]
    return "lost", "training set read from edited content"


@case("store_export", "diff of a version whose data shard was edited")
def _(root: Path) -> Outcome:
    first, second = versions(root)
    edit_shard(root, first)
    code, _, err = store_cli(root, "diff", first, second)
    return refused(code, err, lost_if_ok=True)


def _edit_in_place(path: Path) -> None:
    writable(path)
    with open(path, "r+b") as handle:
        handle.seek(40)
        handle.write(b"\x00\xff\x00\xff")


@case("store_export", "an ingested image edited in place after publishing")
def _(root: Path) -> Outcome:
    version = versions(root)[0]
    pooled = {p.name: p.read_bytes() for p in (root / "store" / "images").glob("*/*")}
    for image in (root / "ingest" / "images").rglob("*.png"):
        _edit_in_place(image)
    unchanged = all(p.read_bytes() == pooled[p.name]
                    for p in (root / "store" / "images").glob("*/*"))
    code, _, err = store_cli(root, "verify", version)
    if unchanged and code == 0:
        return "held", "the pool's copies are intact"
    if not unchanged and one_line(code, err):
        return "held", "verify names the change"
    return "lost", "the published version changed through the input folder"


@case("store_export", "verify after a pooled image was edited")
def _(root: Path) -> Outcome:
    version = versions(root)[0]
    _edit_in_place(sorted((root / "store" / "images").glob("*/*"))[0])
    code, _, err = store_cli(root, "verify", version)
    return refused(code, err, lost_if_ok=True)


@case("store_export", "export hf after a pooled image was edited")
def _(root: Path) -> Outcome:
    version = versions(root)[0]
    for image in (root / "store" / "images").glob("*/*"):
        _edit_in_place(image)
    code, _, err = store_cli(root, "export", version, "--format", "hf", "--out", root / "hf")
    return refused(code, err, lost_if_ok=True)


def _tear(root: Path, version: str) -> None:
    manifest = writable(root / "store" / "versions" / version / "manifest.json")
    manifest.write_text(manifest.read_text()[:100])


@case("store_export", "datasets list with one torn manifest")
def _(root: Path) -> Outcome:
    torn, healthy = versions(root)
    _tear(root, torn)
    code, out, err = store_cli(root, "list", "--json")
    if code == 0 and healthy in out:
        return "held", ""
    return "broke", f"exit {code}, healthy version listed: {healthy in out}"


@case("store_export", "export a healthy version by prefix beside a torn manifest")
def _(root: Path) -> Outcome:
    torn, healthy = versions(root)
    _tear(root, torn)
    code, _, err = store_cli(root, "export", healthy[:6], "--out", root / "h.jsonl")
    return ("held", "") if code == 0 else ("broke", err.strip()[-160:])


@case("store_export", "verify a version whose manifest is torn")
def _(root: Path) -> Outcome:
    torn, _ = versions(root)
    _tear(root, torn)
    return refused(*store_cli(root, "verify", torn)[::2])


@case("store_export", "a 3-character prefix with one candidate")
def _(root: Path) -> Outcome:
    first, second = versions(root)
    code, _, err = store_cli(root, "show", first[:3])
    if "ambiguous" in err:
        return "broke", "called ambiguous"
    return ("held", "") if code == 0 or one_line(code, err) else ("broke", err[-160:])


@case("store_export", "a prefix that is not hex")
def _(root: Path) -> Outcome:
    return refused(*store_cli(root, "export", "v1.0!", "--out", root / "x.jsonl")[::2])


@case("store_export", "export --out under a regular file")
def _(root: Path) -> Outcome:
    (root / "a-file").write_text("x")
    version = versions(root)[0]
    return refused(*store_cli(root, "export", version, "--out", root / "a-file" / "o.jsonl")
                   [::2])


@contextlib.contextmanager
def read_only_folder(root: Path):  # noqa: ANN201 - a context manager
    """A folder nothing can be written into, root included (a read-only tmpfs), or one
    without write permission where mounting is not allowed."""
    folder = root / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                              str(folder)], capture_output=True).returncode == 0
    if not mounted:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@case("store_export", "export into a read-only folder")
def _(root: Path) -> Outcome:
    with read_only_folder(root) as folder:
        return refused(*store_cli(root, "export", versions(root)[0], "--format", "swift",
                                  "--out", folder / "out")[::2])


@case("store_export", "export of a version missing a shard")
def _(root: Path) -> Outcome:
    version = versions(root)[0]
    (root / "store" / "versions" / version / "data" / "part-00000.jsonl").unlink()
    return refused(*store_cli(root, "export", version, "--out", root / "x.jsonl")[::2],
                   lost_if_ok=True)


@case("store_export", "export hf with the image pool gone")
def _(root: Path) -> Outcome:
    shutil.rmtree(root / "store" / "images")
    return refused(*store_cli(root, "export", versions(root)[0], "--format", "hf", "--out",
                              root / "hf")[::2])


@case("store_export", "export jsonl with the image pool gone")
def _(root: Path) -> Outcome:
    shutil.rmtree(root / "store" / "images")
    return refused(*store_cli(root, "export", versions(root)[0], "--out",
                              root / "x.jsonl")[::2], lost_if_ok=True)


@case("store_export", "an export to an existing OUT")
def _(root: Path) -> Outcome:
    (root / "mine.jsonl").write_text("precious")
    code, _, err = store_cli(root, "export", versions(root)[0], "--out", root / "mine.jsonl")
    if (root / "mine.jsonl").read_text() != "precious":
        return "lost", "OUT overwritten"
    return refused(code, err)


@case("store_export", "a SIGKILLed hf export, then the same export again")
def _(root: Path) -> Outcome:
    out = root / "exp" / "hf"
    command = [sys.executable, "-m", "distill", "datasets", "--store", str(root / "store"),
               "export", versions(root)[0], "--format", "hf", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CODE)] + sys.path[1:])}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL, cwd=root)
    deadline = time.monotonic() + 90
    while process.poll() is None and time.monotonic() < deadline:
        if out.parent.is_dir() and any(".tmp-" in p.name or p.name.endswith(".cache")
                                       for p in out.parent.iterdir()):
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run(command, env=env, capture_output=True, cwd=root, timeout=300)
    left = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else []
    if left in (["hf"], [".hf.lock", "hf"]):
        return "held", ""
    return "broke", f"beside OUT: {left}"


@case("store_export", "a manifest copied into another version's folder")
def _(root: Path) -> Outcome:
    first, second = versions(root)
    target = writable(root / "store" / "versions" / second / "manifest.json")
    target.write_text((root / "store" / "versions" / first / "manifest.json").read_text())
    return refused(*store_cli(root, "verify", second)[::2], lost_if_ok=True)


def _policy(root: Path, text: str, *extra: str) -> tuple[int | str, str, str]:
    (root / "policy.yaml").write_text(text)
    return cli("filter", "--traces", root / "gen", "--store", root / "s2", "--policy",
               root / "policy.yaml", *extra)


@case("store_export", "a policy with splits: [trian]")
def _(root: Path) -> Outcome:
    return refused(*_policy(root, "splits: [trian]\n")[::2], "splits")


@case("store_export", "a policy whose teacher_preference names no teacher of the input")
def _(root: Path) -> Outcome:
    return refused(*_policy(root, "per_item: {teacher_preference: [nobody]}\n")[::2],
                   "teacher_preference")


@case("store_export", "a policy that keeps nothing (no --allow-empty)")
def _(root: Path) -> Outcome:
    return refused(*_policy(root, "rules: {correctness: wrong}\n")[::2])


# --- results, compare, eval options ----------------------------------------------------------

FIXTURES = CODE / "tests" / "fixtures" / "eval"


def _result(root: Path, change: Callable[[dict], None]) -> Path:
    data = json.loads((FIXTURES / "result_a.json").read_text())
    change(data)
    path = root / "tampered.json"
    path.write_text(json.dumps(data))
    return path


def _compare_metric(key: str, value: object) -> Callable[[Path], Outcome]:
    def run(root: Path) -> Outcome:
        def change(data: dict) -> None:
            if value is None:
                del data["metrics"][key]
            else:
                data["metrics"][key] = value
        path = _result(root, change)
        code, _, err = cli("compare", FIXTURES / "result_b.json", path)
        return refused(code, err, path.name)
    return run


for _key, _value, _label in (("accuracy", float("nan"), "accuracy NaN"),
                             ("accuracy", 0.999, "accuracy 0.999 against items at 0.6"),
                             ("n", -5.0, "n = -5"), ("n", None, "n missing"),
                             ("accuracy", None, "accuracy missing")):
    case("eval_compare", f"compare a result with {_label}")(_compare_metric(_key, _value))


@case("eval_compare", "compare a result whose per-category accuracy was edited")
def _(root: Path) -> Outcome:
    path = _result(root, lambda d: d["per_category"]["sum"].update(accuracy=0.5))  # items: 1.0
    return refused(*cli("compare", FIXTURES / "result_b.json", path)[::2], path.name)


def _named(name: str | None = None, category: str | None = None) -> Callable[[Path], Outcome]:
    def run(root: Path) -> Outcome:
        def change(data: dict) -> None:
            if name is not None:
                data["model"]["name"] = name
            if category is not None:
                for item in data["items"]:
                    if item["category"] == "sum":
                        item["category"] = category
                data["per_category"][category] = data["per_category"].pop("sum")
        path = _result(root, change)
        code, out, err = cli("compare", FIXTURES / "result_b.json", path, "--out",
                             root / "report")
        return ("held", "") if code == 0 else ("broke", err.strip()[-160:])
    return run


case("eval_compare", "compare a model named vlm[/bold]")(_named(name="vlm[/bold]"))
case("eval_compare", "compare --out a model named $x^2$ (mathtext)")(_named(name="$x^2$"))
case("eval_compare", "compare --out a category named $x_{i}^2$")(_named(category="$x_{i}^2$"))


def _eval(root: Path, *extra: object) -> tuple[int | str, str, str]:
    return cli("eval", "--model", "engine:builtin:knn", "--data", root / "ingest",
               "--out", root / "results", *extra)


for _extra, _label in ((["--batch-size", "0"], "--batch-size 0"),
                       (["--batch-size", "-2"], "--batch-size -2"),
                       (["--max-new-tokens", "0"], "--max-new-tokens 0"),
                       (["--device", "cuda:7"], "--device cuda:7 without CUDA"),
                       (["--engine-option", "base_url=localhost:8000"],
                        "a base_url without a scheme")):
    def _option(root: Path, extra: list[str] = _extra) -> Outcome:
        return refused(*_eval(root, "--no-cache", *extra)[::2])
    case("eval_compare", f"eval {_label}")(_option)


@case("eval_compare", "eval with a read-only --out")
def _(root: Path) -> Outcome:
    with read_only_folder(root) as folder:
        return refused(*cli("eval", "--model", "engine:builtin:knn", "--data", root / "ingest",
                            "--no-cache", "--out", folder / "results")[::2])


@case("eval_compare", "eval with a read-only --cache-dir")
def _(root: Path) -> Outcome:
    with read_only_folder(root) as folder:
        return refused(*_eval(root, "--cache-dir", folder / "cache")[::2])


# --- round one's leftovers, names --------------------------------------------------------------


@case("names", "source ids A-1 and a_1 in one benchmark file")
def _(root: Path) -> Outcome:
    (root / "a.png").write_bytes(png_bytes(1))
    source = root / "ai2d.jsonl"
    source.write_text("".join(json.dumps({"id": i, "question": "q?", "options": ["x", "y"],
                                          "answer": "1", "image": "a.png"}) + "\n"
                              for i in ("A-1", "a_1")))
    code, _, err = cli("eval", "convert", "ai2d", source, "--out", root / "conv")
    if code == 0:
        count = sum(len(shard.read_text().splitlines())
                    for shard in (root / "conv").rglob("part-*.jsonl"))
        return ("held", "") if count == 2 else ("lost", f"{count} items")
    if one_line(code, err, "A-1", "a_1") and "--" in err:
        return "held", "refused naming both rows and how to keep them apart"
    return "broke", err.strip()[-160:]


def lmms_run(root: Path, results: str) -> tuple[Path, Path]:
    """(an lmms-eval --log_samples folder of one MMStar item, our eval set of it), the
    samples line as lmms-eval 0.7's EvaluationTracker writes it (tests/helpers cites it)."""
    from distill.schemas import ImageRef, Sample, sha256_hex

    data = png_bytes(0)
    sample = Sample(id="mmstar-101", question="Which animal is in the picture?",
                    choices=["cat", "dog", "bird", "fish"], answer="B", answer_type="choice",
                    category="coarse_perception", source="mmstar", split="test",
                    image=ImageRef.inline(data, sha256_hex(data)),
                    meta={"source_id": "101"})
    eval_set = root / "mmstar.jsonl"
    eval_set.write_text(sample.model_dump_json() + "\n")
    folder = root / "lmms" / "m"
    folder.mkdir(parents=True)
    (folder / "20260801_101500_samples_mmstar.jsonl").write_text(json.dumps({
        "doc_id": 0, "target": "B", "filtered_resps": "Answer: B",
        "token_counts": [{"output_tokens": 2}], "doc_hash": sha256_hex(b"101"),
        "average": {"question_id": 101, "score": 1.0},
        "input": "Which animal is in the picture?\nOptions: A: cat, B: dog, C: bird, "
                 "D: fish"}) + "\n")
    (folder / "20260801_101500_results.json").write_text(results)
    return root / "lmms", eval_set


@case("names", "an lmms-eval results.json whose results is not a mapping")
def _(root: Path) -> Outcome:
    folder, eval_set = lmms_run(root, '{"results": 5, "configs": [1, 2]}')
    code, _, err = cli("eval", "import", "lmms-eval", folder, "--data", eval_set, "--out",
                       root / "out")
    return refused(code, err, "results")


def _long_image(command: str, skip: bool) -> Callable[[Path], Outcome]:
    def run(root: Path) -> Outcome:
        (root / "a.png").write_bytes(png_bytes(1))
        rows = [{"id": "a", "image": "a.png", "question": "q?", "answer": "1",
                 "options": ["x", "y"]},
                {"id": "b", "image": "x" * 300 + ".png", "question": "q?", "answer": "1",
                 "options": ["x", "y"]}]
        source = root / ("items.jsonl" if command == "ingest" else "ai2d.jsonl")
        if command == "ingest":
            rows = [{k: v for k, v in r.items() if k != "options"} for r in rows]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        args = (["ingest", "jsonl", source] if command == "ingest"
                else ["eval", "convert", "ai2d", source])
        code, _, err = cli(*args, "--out", root / "o", *(["--on-error", "skip"] if skip else []))
        if skip:
            ok = code == 0 and (root / "o" / "rejects.jsonl").is_file()
            return ("held", "") if ok else ("broke", f"exit {code}: {err.strip()[-160:]}")
        return refused(code, err)
    return run


for _command in ("ingest", "convert"):
    for _skip in (False, True):
        case("names", f"{_command}: an image name past NAME_MAX"
             + (" with --on-error skip" if _skip else ""))(_long_image(_command, _skip))


@case("names", "eval import --name of 300 characters (the result's file name)")
def _(root: Path) -> Outcome:
    folder, eval_set = lmms_run(root, '{"results": {"mmstar": {}}, "configs": {}}')
    code, _, err = cli("eval", "import", "lmms-eval", folder, "--data", eval_set,
                       "--name", "m" * 300, "--out", root / "out")
    return ("held", "") if code == 0 or one_line(code, err) else ("broke", err.strip()[-160:])


# --- lineage (a real student, a real eval) ------------------------------------------------------
# These run in the chained project itself, in this order (the move is undone; the edit is
# last): a copy would not do, since paths written absolute still lead to the original.


def build_chain(root: Path) -> Path:
    """Train a 2-step micro student on the first version; evaluate it with `distill eval`;
    the result file."""
    import torch

    from distill.train.config import TrainConfig
    from distill.train.loop import train

    torch.set_num_threads(1)
    version = versions(root)[0]
    config = TrainConfig(stage="cot", model="test-micro", target="cot", llm="full", max_steps=2,
                         batch_size=4, lr=1e-3, warmup_steps=1, save_every=1000, log_every=1,
                         threads=1, tensorboard=False)
    train(config, root / "store" / "versions" / version, root / "run")
    code, _, err = cli("eval", "--model", f"siqvl:{root / 'run'}", "--data", root / "ingest",
                       "--out", root / "results", "--no-cache", "--max-new-tokens", "4")
    assert code == 0, err
    return next((root / "results").glob("*.json"))


@case("lineage", "lineage of a result after the project folder was moved")
def _(root: Path) -> Outcome:
    result = next((root / "results").glob("*.json")).relative_to(root)
    moved = root.with_name(root.name + "-moved")
    root.rename(moved)
    try:
        code, _, err = cli("lineage", moved / result)
    finally:
        moved.rename(root)
    return ("held", "") if code == 0 else ("broke", err.strip()[-160:])


@case("lineage", "lineage after an edit whose hash was written into the manifest")
def _(root: Path) -> Outcome:
    edit_shard(root, versions(root)[0], update_manifest=True)
    code, out, err = cli("lineage", next((root / "results").glob("*.json")))
    if code == 2 and "dataset" in err:
        return "held", ""
    return ("lost", "lineage called it ok") if code == 0 else ("broke", err.strip()[-160:])


# --- running --------------------------------------------------------------------------------------


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-lineage", action="store_true")
    parser.add_argument("--json", type=Path, help="Also write the outcomes here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        template = build(Path(tmp) / "template")
        chained = None
        if not args.no_lineage:
            chained = Path(tmp) / "chained"
            shutil.copytree(template, chained, symlinks=True)
            build_chain(chained)
        outcomes = []
        for index, (group, name, function) in enumerate(CASES):
            if group == "lineage" and chained is None:
                continue
            if group == "lineage":  # in place: a copy's absolute paths would still lead home
                root = chained
            else:
                root = Path(tmp) / f"case-{index:02d}"
                shutil.copytree(template, root, symlinks=True)
            try:
                outcome, note = function(root)
            except Exception as exc:  # noqa: BLE001 - a case that cannot even run broke
                outcome, note = "broke", f"{type(exc).__name__}: {str(exc)[:140]}"
            outcomes.append({"group": group, "case": name, "outcome": outcome, "note": note})
            print(f"{outcome:5s}  [{group}] {name}" + (f"  ({note})" if note else ""))
    if args.json:
        args.json.write_text(json.dumps(outcomes, indent=1))
    for group in dict.fromkeys(o["group"] for o in outcomes):
        counts = Counter(o["outcome"] for o in outcomes if o["group"] == group)
        print(f"{group}: tried {sum(counts.values())}, held {counts['held']}, "
              f"broke {counts['broke']}, lost {counts['lost']}")
    counts = Counter(o["outcome"] for o in outcomes)
    print(f"code {CODE}")
    print(f"tried {len(outcomes)}, held {counts['held']}, broke {counts['broke']}, "
          f"lost {counts['lost']}")


if __name__ == "__main__":
    main_()
