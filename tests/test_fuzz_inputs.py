"""Fuzz every reader of a user's file with random and mutated bytes and records.

Each reader (ingest jsonl and hf, each benchmark converter, both harness importers, every
config file kind, the shard readers) gets inputs drawn by hypothesis: valid files with
bytes flipped, inserted, deleted or cut; records with fields replaced by random JSON
values, wrong-typed image structs, duplicated keys, deep nesting, non-UTF-8 bytes. Every
outcome must be one of:

* exit 0: the input was fine (then the output is complete; under ``--on-error skip``
  every refused row is in rejects.jsonl, naming the file);
* exit 2 with exactly one ``error:`` line that names the file, no traceback, and no
  output or staging folder left behind.

Anything else (a traceback, exit 1, two lines, a leftover) fails the test. The budget is
fixed (``max_examples`` per reader, derandomized so CI is repeatable); set
``DISTILL_FUZZ_EXAMPLES=N`` to run N per reader with a random seed, and
``DISTILL_FUZZ_REPORT=FILE`` to append the counts (inputs tried / held) to FILE.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.cli import main
from distill.core.errors import DistillError
from distill.train.config import TrainConfig
from tests.conftest import png_bytes
from tests.helpers import harness_files as hf

EXAMPLES = int(os.environ.get("DISTILL_FUZZ_EXAMPLES", "0"))
TALLY: Counter[str] = Counter()


def budget(default: int) -> Callable:
    """Hypothesis settings: ``default`` examples in CI (repeatable), more on request."""
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None,
                    derandomize=not EXAMPLES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    report = os.environ.get("DISTILL_FUZZ_REPORT")
    if report and TALLY:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(sorted(TALLY.items()))) + "\n")


# --- what is drawn ------------------------------------------------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False) | st.text(max_size=12)
                | st.sampled_from(["", "a.png", "../a.png", "/etc/passwd", "[/]", "A", "1",
                                   "yes", "Art", "['a', 'b']", "<image 1>"]))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
IMAGE_VALUES = st.one_of(
    JSON_VALUES,
    st.builds(lambda v: {"bytes": v, "path": None}, JSON_SCALARS),
    st.builds(lambda n: {"bytes": n}, st.integers(0, 2**62)),
    st.just({"bytes": "aGVsbG8=", "path": 5}),
)


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with a few bytes flipped, inserted, deleted, or the file cut short."""
    def apply(ops: list[tuple[str, int, bytes]]) -> bytes:
        out = bytearray(data)
        for op, where, chunk in ops:
            at = where % (len(out) + 1)
            if op == "insert":
                out[at:at] = chunk
            elif op == "replace":
                out[at:at + len(chunk)] = chunk
            elif op == "delete":
                del out[at:at + len(chunk) + 1]
            else:
                del out[at:]
        return bytes(out)

    chunks = st.binary(min_size=1, max_size=6) | st.sampled_from(
        [b"\xff", b"\xc3", b"\x00", b"[[[[[[[[", b'"', b"{", b"}", b",", b"\n", b"\t"])
    op = st.tuples(st.sampled_from(["insert", "replace", "delete", "cut"]),
                   st.integers(0, 2**16), chunks)
    return st.lists(op, min_size=1, max_size=4).map(apply)


def spoiled(record: dict[str, Any], image_fields: tuple[str, ...] = ()) -> st.SearchStrategy:
    """``record`` with some fields replaced by random values or removed, and extra keys."""
    fields = sorted(record)
    changes = st.dictionaries(st.sampled_from([*fields, "zz_extra"]),
                              IMAGE_VALUES | st.just(None), min_size=1, max_size=3)

    def apply(change: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        for key, value in change.items():
            if value is None and key in out:
                del out[key]
            else:
                out[key] = value
        return out

    return changes.map(apply)


def hostile_text(text: str) -> st.SearchStrategy[str]:
    """Whole-file attacks on JSON text: nesting, a key twice, a bad byte (as latin-1)."""
    return st.sampled_from([
        "[" * 5000 + "]" * 5000,
        text.replace("{", '{"dup": 1, "dup": 2, ', 1),
        text.replace("{", '{"deep": ' + "[" * 200 + "]" * 200 + ", ", 1),
        text.replace("{", '{"a": "\\ud800", ', 1),
    ])


# --- running the CLI in this process ------------------------------------------------------


def run(args: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, err.getvalue()


def held(reader: str, code: int, err: str, named: Path, out: Path, *,
         skip: bool = False) -> None:
    """Assert one of the two allowed outcomes (see the module docstring), and count it."""
    TALLY[f"{reader}:tried"] += 1
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    leftovers = [p.name for p in out.parent.glob(f".{out.name}.*") if not p.name.endswith(".lock")]
    assert not leftovers, leftovers
    TALLY[f"{reader}:exit {code}"] += 1
    if code == 0:
        if skip and (out / "rejects.jsonl").exists():
            for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
                assert named.name in json.loads(line)["location"], line
        TALLY[f"{reader}:held"] += 1
        return
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert named.name in errors[0], errors[0]
    written = out.glob("*.json") if out.name == "results" else out.glob("manifest.json")
    assert not list(written), "an input that failed left a finished-looking output"
    TALLY[f"{reader}:held"] += 1


def fresh(tmp: Path, name: str) -> Path:
    """An empty work folder per example (hypothesis reuses the test's tmp_path)."""
    folder = tmp / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(1))
    return folder


# --- ingest jsonl ------------------------------------------------------------------------

JSONL_ROW = {"id": "item-1", "image": "a.png", "question": "How many shapes?", "answer": "2"}
JSONL_TEXT = "".join(json.dumps({**JSONL_ROW, "id": f"item-{i}"}) + "\n" for i in range(3))


@budget(25)
@given(content=st.one_of(
    mutated(JSONL_TEXT.encode()),
    st.binary(max_size=200),
    hostile_text(JSONL_TEXT).map(str.encode),
    st.lists(spoiled(JSONL_ROW), min_size=1, max_size=3).map(
        lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode())),
    skip=st.booleans())
def test_fuzz_ingest_jsonl(tmp_path: Path, content: bytes, skip: bool) -> None:
    work = fresh(tmp_path, "jsonl")
    source = work / "items.jsonl"
    source.write_bytes(content)
    out = work / "out"
    code, err = run(["ingest", "jsonl", str(source), "--out", str(out),
                     *(["--on-error", "skip"] if skip else [])])
    held("ingest jsonl", code, err, source, out, skip=skip)


# --- ingest hf (a parquet file) ------------------------------------------------------------


def _parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


@budget(6)
@given(image=IMAGE_VALUES, question=JSON_SCALARS, cut=st.integers(0, 4000) | st.none())
def test_fuzz_ingest_hf(tmp_path: Path, image: Any, question: Any, cut: int | None) -> None:
    work = fresh(tmp_path, "hf")
    source = work / "items.parquet"
    row = {"id": "x-1", "image": {"bytes": png_bytes(1), "path": None},
           "question": "How many?", "answer": "2"}
    try:
        _parquet(source, [row, {**row, "id": "x-2", "image": image, "question": question}])
    except Exception:  # noqa: BLE001 - arrow cannot hold this mix; store one row as given
        _parquet(source, [{**row, "image": json.dumps(image, default=str)}])
    if cut is not None:
        data = source.read_bytes()
        source.write_bytes(data[:cut % max(len(data), 1)])
    out = work / "out"
    code, err = run(["ingest", "hf", str(source), "--out", str(out), "--on-error", "skip"])
    held("ingest hf", code, err, source, out, skip=True)


# --- each benchmark converter ---------------------------------------------------------------

CONVERTER_RECORDS: dict[str, dict[str, Any]] = {
    "mathvista": {"pid": "1", "question": "How many?", "answer": "3", "image": "a.png",
                  "question_type": "free_form", "answer_type": "integer"},
    "scienceqa": {"question": "Which?", "choices": ["x", "y"], "answer": 1, "image": "a.png",
                  "subject": "natural science"},
    "mmstar": {"index": "1", "question": "Which?", "A": "x", "B": "y", "answer": "A",
               "image": "a.png", "category": "c"},
    "mmmu": {"id": "validation_Art_1", "question": "Which <image 1>?", "options": "['a', 'b']",
             "answer": "A", "question_type": "multiple-choice", "image_1": "a.png"},
    "ai2d": {"question": "Which?", "options": ["x", "y"], "answer": "1", "image": "a.png"},
    "chartqa": {"imgname": "a.png", "query": "How many?", "label": "3"},
    "mathverse": {"sample_index": "1", "question": "How many?", "answer": "3",
                  "image": "a.png", "problem_version": "Vision Only"},
    "hallusionbench": {"question": "Is it?", "gt_answer": "1", "visual_input": "1",
                       "filename": "a.png", "subcategory": "x", "category": "VD",
                       "set_id": "0", "figure_id": "0", "question_id": "0"},
}


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps(records))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".tsv":
        keys = sorted({key for record in records for key in record})
        lines = ["\t".join(keys)] + ["\t".join(str(r.get(k, "")).replace("\t", " ")
                                               .replace("\n", " ") for k in keys)
                                     for r in records]
        path.write_text("\n".join(lines) + "\n")
    else:
        try:
            _parquet(path, records)
        except Exception:  # noqa: BLE001 - mixed types arrow refuses: store them as text
            _parquet(path, [{k: json.dumps(v) for k, v in r.items()} for r in records])


@st.composite
def converter_inputs(draw: st.DrawFn, fmt: str) -> tuple[str, bytes | list[dict[str, Any]]]:
    suffix = draw(st.sampled_from([".json", ".jsonl", ".tsv", ".parquet"]))
    base = CONVERTER_RECORDS[fmt]
    records = draw(st.lists(spoiled(base), min_size=1, max_size=2))
    if draw(st.booleans()):
        return suffix, records
    text = json.dumps([base, {**base, **{k: v + "2" if isinstance(v, str) else v
                                          for k, v in base.items() if k in ("pid", "id")}}])
    if suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in json.loads(text))
    return suffix, draw(mutated(text.encode()) | hostile_text(text).map(str.encode))


@pytest.mark.parametrize("fmt", sorted(CONVERTER_RECORDS))
@budget(7)
@given(data=st.data(), skip=st.booleans())
def test_fuzz_eval_convert(tmp_path: Path, fmt: str, data: st.DataObject, skip: bool) -> None:
    suffix, content = data.draw(converter_inputs(fmt))
    work = fresh(tmp_path, "convert")
    source = work / f"bench{suffix}"
    if isinstance(content, bytes):
        if suffix == ".parquet":
            _write_records(source, [CONVERTER_RECORDS[fmt]])
            data = source.read_bytes()
            content = data[: len(content) % max(len(data), 1)] + content[:8]
        source.write_bytes(content)
    else:
        _write_records(source, content)
    out = work / "out"
    code, err = run(["eval", "convert", fmt, str(source), "--out", str(out),
                     *(["--on-error", "skip"] if skip else [])])
    held(f"eval convert {fmt}", code, err, source, out, skip=skip)


# --- both harness importers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_set_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.write_eval_set(tmp_path_factory.mktemp("fuzz-evalset") / "evalset")


OUTPUTS = {101: "Answer: B", 102: "A", 103: "Answer: C", 104: "D"}


@budget(15)
@given(target=st.sampled_from(["samples", "results"]),
       content=st.one_of(st.binary(max_size=120), st.just(b"*folder*"),
                         st.sampled_from([b"[]", b'{"results": 5, "configs": [1]}',
                                          b'{"configs": {"mmstar": {"metric_list": 7}}}',
                                          b'{"config": {"model": "m[/]"}}'])),
       mutate=st.booleans(), seed=st.integers(0, 2**16))
def test_fuzz_import_lmms_eval(tmp_path: Path, eval_set_file: Path, target: str,
                               content: bytes, mutate: bool, seed: int) -> None:
    work = fresh(tmp_path, "lmms")
    folder = hf.lmms_run_07(work / "lmms_out", OUTPUTS)
    path = next(folder.glob(f"*_{target}*"))
    if content == b"*folder*":  # a folder where a file is expected
        path.unlink()
        path.mkdir()
    elif mutate:
        data = path.read_bytes()
        at = seed % max(len(data), 1)
        path.write_bytes(data[:at] + content[:6] + data[at + len(content[:6]):])
    else:
        path.write_bytes(content)
    out = work / "results"
    code, err = run(["eval", "import", "lmms-eval", str(folder), "--data", str(eval_set_file),
                     "--out", str(out)])
    held("eval import lmms-eval", code, err, folder if target == "results" or
         content == b"*folder*" else path, out)


@budget(15)
@given(rows=st.lists(spoiled(hf.vlm_rows(OUTPUTS)[0]), min_size=1, max_size=3),
       content=st.binary(max_size=100) | st.none(), suffix=st.sampled_from([".tsv", ".json"]))
def test_fuzz_import_vlmevalkit(tmp_path: Path, eval_set_file: Path, rows: list[dict],
                                content: bytes | None, suffix: str) -> None:
    work = fresh(tmp_path, "vlm")
    path = work / "M" / f"M_MMStar{suffix}"
    path.parent.mkdir()
    if content is not None:
        path.write_bytes(content)
    else:
        _write_records(path, rows)
    out = work / "results"
    code, err = run(["eval", "import", "vlmevalkit", str(path), "--data", str(eval_set_file),
                     "--out", str(out)])
    held("eval import vlmevalkit", code, err, path, out)


# --- every config file kind ---------------------------------------------------------------


REPO = Path(__file__).resolve().parents[1]
# kind -> (a shipped file of that kind, to mutate; how the toolkit loads one)
CONFIG_KINDS: dict[str, tuple[str, str]] = {
    "teacher set": ("data/teachers", "distill.generate.teachers:load_teacher_set"),
    "judge file": ("data/judges/digits.yaml", "distill.generate.judges:load_judge"),
    "policy file": ("data/policies/default.yaml", "distill.filter.policy:load_policy"),
    "prompt file": ("prompts/cot.yaml", "distill.core.prompts:load_prompt"),
    "train config": ("data/configs/cot.yaml", "distill.train.config:load_config"),
    "model spec": ("data/models/test-micro.yaml", "distill.train.siqvl.build:load_model_spec"),
    "demo plan": ("data/demo-quick.yaml", "distill.demo:load_plan"),
}


def _shipped_text(kind: str) -> str:
    path = REPO / CONFIG_KINDS[kind][0]
    if path.is_dir():
        path = sorted(path.glob("*.yaml"))[0]
    return path.read_text(encoding="utf-8")


def _load_config(kind: str, path: Path) -> None:
    import importlib

    module, name = CONFIG_KINDS[kind][1].split(":")
    getattr(importlib.import_module(module), name)(path)


@pytest.mark.parametrize("kind", sorted(CONFIG_KINDS))
@budget(6)
@given(data=st.data())
def test_fuzz_config_files(tmp_path: Path, kind: str, data: st.DataObject) -> None:
    text = _shipped_text(kind)
    content = data.draw(st.one_of(
        mutated(text.encode()), st.binary(max_size=80),
        st.sampled_from([b"[" * 3000, b"a: &a [*a]", "- " * 300 + "x",
                         b"? [a]\n: 1\n", b"a: 1\na: 2\n", b"\xff\xfe: 1\n", b"a: \x00\n",
                         b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                         b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c]\n"])
        .map(lambda v: v if isinstance(v, bytes) else v.encode())))
    work = fresh(tmp_path, "config")
    path = work / "config.yaml"
    path.write_bytes(content)
    TALLY[f"config {kind}:tried"] += 1
    try:
        _load_config(kind, path)
        TALLY[f"config {kind}:exit 0"] += 1
    except DistillError as exc:  # the CLI prints it as one line and exits 2
        message = str(exc)
        assert path.name in message, message
        assert "\n" not in message, message
        TALLY[f"config {kind}:exit 2"] += 1
    TALLY[f"config {kind}:held"] += 1


# --- shard readers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from testing.generate import make_ingest

    return make_ingest(tmp_path_factory.mktemp("fuzz-shards") / "samples", {"train": 4},
                       shard_size=4)


@budget(10)
@given(content=st.data())
def test_fuzz_shard_readers(tmp_path: Path, sample_folder: Path,
                            content: st.DataObject) -> None:
    """A Sample shard spoiled after ingest, its manifest updated to vouch for it (as a buggy
    tool would): generate reads it and stops with an error naming the shard."""
    from distill.schemas import file_sha256
    from testing.generate import builtin_teacher, write_teachers

    work = fresh(tmp_path, "shards")
    samples = shutil.copytree(sample_folder, work / "samples")
    shard = samples / "samples" / "train" / "part-00000.jsonl"
    text = shard.read_text(encoding="utf-8")
    spoiled_bytes = content.draw(mutated(text.encode()) | hostile_text(text).map(str.encode))
    shard.write_bytes(spoiled_bytes)
    manifest_path = samples / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for ref in manifest["shards"]:
        if ref["name"].endswith("part-00000.jsonl"):
            ref["sha256"] = file_sha256(shard)
    manifest_path.write_text(json.dumps(manifest))
    teachers = write_teachers(work / "teachers.yaml", {"knn": builtin_teacher("knn", k=1)})
    out = work / "out"
    code, err = run(["generate", "--samples", str(samples), "--teachers", str(teachers),
                     "--out", str(out)])
    TALLY["shard readers:tried"] += 1
    assert "Traceback" not in err and code in (0, 2), (code, err)
    TALLY[f"shard readers:exit {code}"] += 1
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and shard.name in errors[0], err
    TALLY["shard readers:held"] += 1


# --- the dataset store: version files spoiled after publishing ----------------------------
# Issue 34: what the toolkit reads back of its own is input too. A published version's files
# (manifest, data and scored shards, dedup index, pooled images, verification stamps) are
# spoiled; every store command must then exit 0 or exit 2 with one line, and a spoiled file
# that a version's name vouches for must never pass `datasets verify`.


@pytest.fixture(scope="module")
def store_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ingest/ + gen/ + store/ with two versions (default policy; every split)."""
    from filter_fixtures import build_generate_dir, scripted_teachers

    root = tmp_path_factory.mktemp("fuzz-store")
    build_generate_dir(root, {"train": 8, "test": 4}, scripted_teachers(), shard_size=6)
    (root / "every-split.yaml").write_text("name: every-split\nsplits: null\n")
    for extra in ([], ["--policy", str(root / "every-split.yaml")]):
        code, err = run(["filter", "--traces", str(root / "gen"), "--store",
                         str(root / "store"), *extra])
        assert code == 0, err
    versions = sorted((root / "store" / "versions").iterdir())
    assert main(["datasets", "--store", str(root / "store"), "export", versions[0].name,
                 "--out", str(root / "stamped.jsonl")]) == 0  # leaves a stamp to spoil
    return root


def _version_files(store: Path) -> dict[str, Path]:
    """What a spoiler may pick: one file of each kind in the store."""
    first = sorted((store / "versions").iterdir())[0]
    return {"manifest": first / "manifest.json",
            "data shard": sorted((first / "data").glob("*.jsonl"))[0],
            "scored shard": sorted(first.glob("scored/*/*.jsonl"))[0],
            "index": first / "index" / "index.json",
            "pooled image": sorted((store / "images").glob("*/*"))[0],
            "stamp": sorted((store / "cache" / "verified").glob("*.json"))[0]}


# Which commands read (so must refuse) a spoiled file of each kind: export reads the kept
# traces and their images; diff every shard and the index, no image; verify everything.
_READERS_OF = {"manifest": ("verify", "export", "export swift", "diff"),
               "data shard": ("verify", "export", "export swift", "diff"),
               "scored shard": ("verify", "diff"), "index": ("verify", "diff"),
               "pooled image": ("verify",)}


def _changed(target: str, before: bytes, after: bytes) -> bool:
    """Did the spoiling change what the version's name vouches for? (A manifest re-spaced,
    or changed only in a field its name does not cover, such as created_at, still names
    the same content.)"""
    if target != "manifest":
        return after != before
    from distill.schemas import DatasetManifest

    try:
        old, new = (DatasetManifest.model_validate_json(text) for text in (before, after))
    except ValueError:
        return True
    return (new.version, new.content_version(), new.policy, new.counts.get("kept")) != (
        old.version, old.content_version(), old.policy, old.counts.get("kept"))


STORE_COMMANDS = {"list": ["list"], "show": ["show", "{v}"], "verify": ["verify", "{v}"],
                  "export": ["export", "{v}", "--out", "{o}/x.jsonl"],
                  "export swift": ["export", "{v}", "--format", "swift", "--out", "{o}/s"],
                  "diff": ["diff", "{v}", "{w}"]}


@budget(12)
@given(target=st.sampled_from(["manifest", "data shard", "scored shard", "index",
                               "pooled image", "stamp"]),
       data=st.data(), command=st.sampled_from(sorted(STORE_COMMANDS)))
def test_fuzz_store_files(tmp_path: Path, store_project: Path, target: str,
                          data: st.DataObject, command: str) -> None:
    work = tmp_path / "store-fuzz"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(store_project, work, symlinks=True)
    store = work / "store"
    path = _version_files(store)[target]
    before = path.read_bytes()
    after = data.draw(mutated(before) | (hostile_text(before.decode()).map(str.encode)
                                         if target != "pooled image" else mutated(before)))
    path.chmod(0o644)
    path.write_bytes(after)
    first, second = (p.name for p in sorted((store / "versions").iterdir()))
    args = [a.format(v=first[:8], w=second[:8], o=work / "out")
            for a in STORE_COMMANDS[command]]
    code, err = run(["datasets", "--store", str(store), *args])
    reader = f"store {target}"
    TALLY[f"{reader}:tried"] += 1
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    TALLY[f"{reader}:exit {code}"] += 1
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
        assert first[:8] in errors[0] or str(store) in errors[0], errors[0]
    if command in _READERS_OF.get(target, ()) and _changed(target, before, after):
        assert code == 2, f"{target} spoiled, yet `{command}` exited 0"
    leftovers = [p.name for p in (work / "out").glob(".*")] if (work / "out").exists() else []
    assert not [name for name in leftovers if ".tmp-" in name], leftovers
    TALLY[f"{reader}:held"] += 1


# --- export targets: every OUT a user may give ---------------------------------------------


def _export_target(work: Path, kind: str) -> Path:
    """An --out of the given kind (and whatever it needs around it)."""
    (work / "a-file").write_text("precious")
    (work / "a-folder").mkdir(exist_ok=True)
    (work / "a-folder" / "mine.txt").write_text("precious")
    targets = {
        "fresh": work / "new" / "deeper" / "out",
        "under a file": work / "a-file" / "out",
        "an existing file": work / "a-file",
        "an existing folder": work / "a-folder",
        "a link to a folder": work / "link",
        "a dangling link": work / "dangling",
        "a long name": work / ("n" * 300),
        "odd characters": work / "o[/bold]\n$x$ ü",
        "dot": work / "a-folder" / ".",
    }
    if kind == "a link to a folder":
        (work / "link").symlink_to(work / "a-folder")
    if kind == "a dangling link":
        (work / "dangling").symlink_to(work / "nowhere")
    return targets[kind]


@budget(10)
@given(kind=st.sampled_from(["fresh", "under a file", "an existing file", "an existing folder",
                             "a link to a folder", "a dangling link", "a long name",
                             "odd characters", "dot"]),
       fmt=st.sampled_from(["jsonl", "parquet", "swift", "llamafactory"]))
def test_fuzz_export_targets(tmp_path: Path, store_project: Path, kind: str,
                             fmt: str) -> None:
    work = tmp_path / "targets"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    out = _export_target(work, kind)
    version = sorted((store_project / "store" / "versions").iterdir())[0].name
    code, err = run(["datasets", "--store", str(store_project / "store"), "export", version,
                     "--format", fmt, "--out", str(out)])
    TALLY["export targets:tried"] += 1
    assert "Traceback" not in err and code in (0, 2), (code, err)
    TALLY[f"export targets:exit {code}"] += 1
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
    else:
        assert out.exists() and kind in ("fresh", "odd characters"), kind
    assert (work / "a-file").read_text() == "precious"
    assert (work / "a-folder" / "mine.txt").read_text() == "precious"
    assert not (work / "nowhere").exists()
    left = [p for p in work.rglob(".*") if ".tmp-" in p.name]
    assert not left, left
    TALLY["export targets:held"] += 1


# --- result files: what compare reads --------------------------------------------------------

RESULT_FILE = REPO / "tests" / "fixtures" / "eval" / "result_a.json"
OTHER_RESULT = REPO / "tests" / "fixtures" / "eval" / "result_b.json"


@st.composite
def result_files(draw: st.DrawFn) -> bytes:
    text = RESULT_FILE.read_text(encoding="utf-8")
    record = json.loads(text)
    how = draw(st.sampled_from(["bytes", "metrics", "items", "names"]))
    if how == "bytes":
        return draw(mutated(text.encode()) | hostile_text(text).map(str.encode))
    if how == "metrics":
        key = draw(st.sampled_from([*record["metrics"], "zz"]))
        value = draw(st.floats() | st.integers(-10, 10) | st.none() | JSON_SCALARS)
        if value is None:
            record["metrics"].pop(key, None)
        else:
            record["metrics"][key] = value
    elif how == "items":
        index = draw(st.integers(0, len(record["items"]) - 1))
        record["items"][index] = draw(spoiled(record["items"][index]))
    else:
        record["model"]["name"] = draw(st.text(min_size=1, max_size=40) | st.sampled_from(
            ["vlm[/bold]", "$x^2$", "_hidden", "a" * 400, "<script>x</script>"]))
    return json.dumps(record, allow_nan=True).encode()


@budget(15)
@given(content=result_files())
def test_fuzz_result_files(tmp_path: Path, content: bytes) -> None:
    work = fresh(tmp_path, "results")
    path = work / "result.json"
    path.write_bytes(content)
    code, err = run(["compare", str(OTHER_RESULT), str(path), "--out", str(work / "report")])
    TALLY["result files:tried"] += 1
    assert "Traceback" not in err and code in (0, 2), (code, err)
    TALLY[f"result files:exit {code}"] += 1
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and path.name in errors[0], err
    else:
        assert (work / "report" / "compare.html").is_file()
    TALLY["result files:held"] += 1


# --- policies against their input -------------------------------------------------------------

POLICY_NAMES = st.sampled_from(["train", "test", "trian", "", "alpha", "beta", "alpah",
                                "[/]", "$x$", "x" * 300])


@budget(6)
@given(splits=st.none() | st.lists(POLICY_NAMES, max_size=2),
       teachers=st.lists(POLICY_NAMES, max_size=2, unique=True),
       rule=st.sampled_from(["", "rules: {correctness: wrong}\n",
                             "rules: {correctness: correct}\n"]))
def test_fuzz_policies_against_their_input(tmp_path: Path, store_project: Path,
                                           splits: list[str] | None, teachers: list[str],
                                           rule: str) -> None:
    work = fresh(tmp_path, "policies")
    policy = work / "policy.yaml"
    policy.write_text(json.dumps({"name": "fuzzed", "splits": splits,
                                  "per_item": {"teacher_preference": teachers}}) + "\n" + rule)
    store = work / "store"
    code, err = run(["filter", "--traces", str(store_project / "gen"), "--store", str(store),
                     "--policy", str(policy)])
    TALLY["policy vs input:tried"] += 1
    assert "Traceback" not in err and code in (0, 2), (code, err)
    TALLY[f"policy vs input:exit {code}"] += 1
    versions = list((store / "versions").iterdir()) if (store / "versions").exists() else []
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        assert policy.name in errors[0] or "keeps none" in errors[0], errors[0]
        assert not versions
    else:
        (version,) = versions
        manifest = json.loads((version / "manifest.json").read_text())
        assert manifest["counts"]["kept"] > 0  # an empty version only with --allow-empty
        assert set(splits or []) <= {"train", "test"} and set(teachers) <= {"alpha", "beta"}
    TALLY["policy vs input:held"] += 1


# --- training: checkpoints, run folders, train configs -------------------------------------
#
# What the toolkit reads back of its own is input too. Each draw damages a real run of the
# micro student (tests/test_train_hostile.py has one test per class) and resumes it through
# the CLI. Allowed: exit 0 with the final weights of an uninterrupted run, byte for byte
# (it skipped what was damaged and said so), or exit 2 with one `error:` line naming the
# run; never a traceback, never other weights from a checkpoint that did not verify.


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from testing.train_hostile import finished_run
    from tests.train_support import make_dataset
    from tests.train_support import make_ingest as make_train_ingest

    root = tmp_path_factory.mktemp("fuzz-train")
    data = make_dataset(make_train_ingest(root / "ingest", train=24, test=4), root / "version")
    return {"data": data, "reference": finished_run(data, root / "reference")}


def train_held(surface: str, code: int, text: str, run: Path, reference: Path, *,
               same_weights: bool = True, named: tuple[str, ...] = ()) -> None:
    """Assert one of the allowed outcomes of a resume (see above), and count it: an error
    names the run folder (or one of ``named``)."""
    import torch

    from testing.train_hostile import error_lines, final_weights

    torch.set_num_threads(1)  # a drawn `threads` set it for this process
    TALLY[f"{surface}:tried"] += 1
    assert "Traceback" not in text, text
    assert code in (0, 2), (code, text)
    TALLY[f"{surface}:exit {code}"] += 1
    if code == 0:
        if same_weights:
            assert final_weights(run) == final_weights(reference), text
    else:
        errors = error_lines(text)
        assert len(errors) == 1, text
        assert any(name in errors[0] for name in (str(run), *named)) or (
            "training diverged" in errors[0] and named), errors[0]
    TALLY[f"{surface}:held"] += 1


CHECKPOINT_FILES = ["trainable.safetensors", "optimizer.json", "optimizer.safetensors",
                    "rng-0.json", "rng-0.safetensors", "trainer_state.json", "checkpoint.json"]


@budget(16)
@given(name=st.sampled_from(CHECKPOINT_FILES),
       how=st.sampled_from(["bytes", "values", "delete", "swap"]), every=st.booleans(),
       vouched=st.booleans(), data=st.data())
def test_fuzz_checkpoints(tmp_path: Path, train_runs: dict[str, Path], name: str, how: str,
                          every: bool, vouched: bool, data: st.DataObject) -> None:
    """A file of the newest checkpoint (or of each) mutated, spoiled, deleted or swapped
    with the other checkpoint's; ``vouched``: its record rewritten to match (only the
    state's own checks stand then, and a resume on it may end with other weights)."""
    from testing.train_hostile import run_cli, stopped_copy, train_args, vouch

    work = fresh(tmp_path, "ckpt")
    run = stopped_copy(train_runs["reference"], work / "run")
    checkpoints = sorted(run.glob("checkpoint-*"))
    originals = {ck: (ck / name).read_bytes() for ck in checkpoints}
    for ck in checkpoints if every else checkpoints[-1:]:
        path = ck / name
        if how == "delete":
            path.unlink()
        elif how == "swap":
            other = checkpoints[0] if ck != checkpoints[0] else checkpoints[-1]
            path.write_bytes(originals[other])
        elif how == "values" and name.endswith(".json"):
            path.write_text(json.dumps(data.draw(spoiled(json.loads(originals[ck])))))
        else:
            path.write_bytes(data.draw(mutated(originals[ck])))
        if vouched and name != "checkpoint.json":
            vouch(ck)
    code, text = run_cli(train_args(train_runs["data"], run, resume=True))
    train_held("train checkpoints", code, text, run, train_runs["reference"],
               same_weights=not vouched)


def _run_folder_change(run: Path, reference: Path, what: str, data: st.DataObject) -> None:
    """Do ``what`` to a run folder (a thing a crash, a copy or a user leaves there)."""
    if what.startswith("manifest") and not (run / "manifest.json").exists():
        return
    if what == "manifest bytes":
        path = run / "manifest.json"
        path.write_bytes(data.draw(mutated(path.read_bytes()) | hostile_text(
            path.read_text()).map(str.encode)))
    elif what == "manifest values":
        path = run / "manifest.json"
        with contextlib.suppress(ValueError, RecursionError):  # already spoiled: left so
            record = json.loads(path.read_bytes())
            if isinstance(record, dict):
                path.write_text(json.dumps(data.draw(spoiled(record))))
    elif what == "manifest deleted":
        (run / "manifest.json").unlink()
    elif what == "metrics bytes":
        path = run / "metrics.jsonl"
        path.write_bytes(data.draw(mutated(path.read_bytes())))
    elif what == "lock":
        lock = run / ".lock"
        kind = data.draw(st.sampled_from(["bytes", "dead pid", "folder", "link", "fifo"]))
        if kind == "bytes":
            lock.write_bytes(data.draw(st.binary(max_size=40)))
        elif kind == "dead pid":
            lock.write_text(json.dumps({"pid": 2**22 + 7, "host": os.uname().nodename,
                                        "command": "distill train", "started": "then"}))
        elif kind == "folder":
            lock.mkdir()
        elif kind == "link":
            lock.symlink_to(run / "manifest.json")
        else:
            os.mkfifo(lock)
    elif what == "leftovers":
        for name in data.draw(st.lists(st.sampled_from(
                [".checkpoint-000006.tmp", ".final.tmp", "checkpoint-000009",
                 "checkpoint-1", ".final.old-999999"]), min_size=1, max_size=3, unique=True)):
            (run / name).mkdir()
            (run / name / "junk.bin").write_bytes(b"\x00" * 10)
    elif what == "half final":
        shutil.rmtree(run / "final", ignore_errors=True)
        (run / "final").mkdir()
        shutil.copyfile(reference / "final" / "config.json", run / "final" / "config.json")
    elif what == "checkpoint as a file":
        path = run / "checkpoint-000008"
        path.write_bytes(data.draw(st.binary(max_size=20)))


RUN_FOLDER_CHANGES = ["manifest bytes", "manifest values", "manifest deleted", "metrics bytes",
                      "lock", "leftovers", "half final", "checkpoint as a file"]


@budget(14)
@given(changes=st.lists(st.sampled_from(RUN_FOLDER_CHANGES), min_size=1, max_size=2,
                        unique=True), finished=st.booleans(), resume=st.booleans(),
       data=st.data())
def test_fuzz_run_folders(tmp_path: Path, train_runs: dict[str, Path], changes: list[str],
                          finished: bool, resume: bool, data: st.DataObject) -> None:
    """A finished or a stopped run folder with things beside or in place of its files,
    then `train` (with or without --resume) on it."""
    from testing.train_hostile import run_cli, stopped_copy, train_args

    work = fresh(tmp_path, "runfolder")
    reference = train_runs["reference"]
    run = shutil.copytree(reference, work / "run") if finished else \
        stopped_copy(reference, work / "run")
    for what in changes:
        _run_folder_change(run, reference, what, data)
    code, text = run_cli(train_args(train_runs["data"], run, resume=resume))
    train_held("train run folders", code, text, run, reference)


TRAIN_FIELDS = sorted(set(TrainConfig.model_fields)
                      - {"stage", "max_steps", "epochs", "vision_steps", "vision_batch_size",
                         "compile"}) + ["lora.r", "lora.alpha", "lora.dropout",
                                        "lora.target_modules"]
HOSTILE_YAML = st.sampled_from(["-1", "0", "1", "3", "4294967296", "18446744073709551617",
                                "1e308", "1e400", ".nan", ".inf", "-.inf", "auto", "[]",
                                "[2, 3]", "[0.9]", "[q_proj]", "[nope]", "x", "true", "null",
                                "'../../etc'", "{a: 1}", "[0.5, 0.5]", "2.5"])


@budget(24)
@given(overrides=st.lists(st.tuples(st.sampled_from(TRAIN_FIELDS),
                                    HOSTILE_YAML | JSON_SCALARS.map(json.dumps)),
                          min_size=1, max_size=2))
def test_fuzz_train_configs(tmp_path: Path, train_runs: dict[str, Path],
                            overrides: list[tuple[str, str]]) -> None:
    """`distill train --set FIELD=VALUE` with hostile values (the run's length fixed):
    it trains, or stops in one line naming the field (or, for a value that is allowed but
    extreme, a learning rate of 1e308, saying the training diverged); never a library's
    traceback."""
    from testing.train_hostile import run_cli, train_args

    work = fresh(tmp_path, "trainconfig")
    sets = [f"{field}={value}" for field, value in overrides]
    if any(field.startswith("lora.") for field, _ in overrides):
        sets.insert(0, "llm=lora")
    code, text = run_cli(train_args(train_runs["data"], work / "run", *sets))
    train_held("train configs", code, text, work / "run", train_runs["reference"],
               same_weights=False, named=tuple(field for field, _ in overrides))
