"""Issue 34's classes for the dataset store, exports, policies, eval options, result files and
names: one test per class, through the real CLI where a user meets them (the fuzz harness,
test_fuzz_inputs.py, draws such inputs at random; RELIABILITY.md counts them)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filter_fixtures import build_generate_dir, scripted_teachers

from distill.cli import main
from distill.core.errors import DistillError
from distill.core.formatting import NAME_MAX, plain
from distill.core.shards import write_json_atomic
from distill.filter.store import DatasetStore
from distill.schemas import DatasetManifest, EvalResult, file_sha256
from tests.conftest import png_bytes, write_jsonl

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def run(args: list[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ingest/ + gen/ + store/ with one version (default policy) and a second (every split)."""
    root = tmp_path_factory.mktemp("store-hardening")
    build_generate_dir(root, {"train": 12, "test": 4}, scripted_teachers(), shard_size=6)
    everything = root / "every-split.yaml"
    everything.write_text("name: every-split\nsplits: null\n")
    for extra in ([], ["--policy", str(everything)]):
        assert main(["filter", "--traces", str(root / "gen"), "--store", str(root / "store"),
                     *extra]) == 0
    return root


@pytest.fixture
def copy(project: Path, tmp_path: Path) -> Path:
    """A private copy of the project (relative paths inside it keep working)."""
    return Path(shutil.copytree(project, tmp_path / "p", symlinks=True))


def versions(root: Path) -> list[str]:
    return [m.version for m in DatasetStore(root / "store").list_versions()]


def data_shard(root: Path, version: str) -> Path:
    return root / "store" / "versions" / version / "data" / "part-00000.jsonl"


def edit(path: Path, old: bytes, new: bytes) -> None:
    """Change a published file in place (as root, or after chmod: pool files are read-only)."""
    path.chmod(0o644)
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


# --- content is verified wherever a version is read -----------------------------------------


READERS = [["export", "{v}", "--format", "jsonl", "--out", "{o}/x.jsonl"],
           ["export", "{v}", "--format", "parquet", "--out", "{o}/x.parquet"],
           ["export", "{v}", "--format", "swift", "--out", "{o}/swift"],
           ["diff", "{v}", "{w}"],
           ["verify", "{v}"]]


@pytest.mark.parametrize("with_manifest_updated", [False, True])
def test_an_edited_shard_is_refused_by_every_reader(copy: Path, capsys,
                                                    with_manifest_updated: bool) -> None:
    version, other = versions(copy)
    shard = data_shard(copy, version)
    edit(shard, b'"final_answer":"', b'"final_answer":"9')
    if with_manifest_updated:  # and its new hash written into the manifest, as a tool might
        manifest_path = shard.parents[1] / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["shards"][0]["sha256"] = file_sha256(shard)
        manifest_path.chmod(0o644)
        manifest_path.write_text(json.dumps(manifest))
    expected = "its content hashes to" if with_manifest_updated else \
        "data/part-00000.jsonl: changed since it was published"
    for reader in READERS:
        args = [a.format(v=version[:8], w=other[:8], o=copy / "out") for a in reader]
        code, _, err = run(["datasets", "--store", copy / "store", *args], capsys)
        assert code == 2 and expected in one_error(err), (reader, err)
    assert not (copy / "out").exists() or not any((copy / "out").iterdir())
    from distill.train.data import load_training_set

    with pytest.raises(DistillError, match=expected.split(":")[0]):
        load_training_set(shard.parents[1])


def test_an_input_image_edited_after_publishing_leaves_the_version_intact(copy: Path,
                                                                          capsys) -> None:
    """The pool holds copies: an edit in the ingest folder never reaches a version; an edit
    in the pool itself is named by verify and refused by export."""
    version = versions(copy)[0]
    pooled = sorted((copy / "store" / "images").glob("*/*.png"))
    assert pooled and all(p.stat().st_nlink == 1 for p in pooled)
    assert all(not os.access(p, os.W_OK) or os.geteuid() == 0 for p in pooled)
    assert all(p.stat().st_mode & 0o222 == 0 for p in pooled)  # read-only
    for source in (copy / "ingest" / "images").rglob("*.png"):
        with open(source, "r+b") as handle:  # edited in place, as an image editor may
            handle.seek(40)
            handle.write(b"\x00\xff\x00\xff")
    code, out, _ = run(["datasets", "--store", copy / "store", "verify", version], capsys)
    assert code == 0 and out.startswith("ok ")
    victim = pooled[0]
    victim.chmod(0o644)
    with open(victim, "r+b") as handle:
        handle.seek(40)
        handle.write(b"\x00\xff\x00\xff")
    code, _, err = run(["datasets", "--store", copy / "store", "verify", version], capsys)
    line = one_error(err)
    assert code == 2 and f"image {victim.parent.name}/{victim.name}" in line
    code, _, err = run(["datasets", "--store", copy / "store", "export", version[:6],
                        "--format", "hf", "--out", copy / "hf"], capsys)
    assert code == 2 and victim.name in one_error(err) and not (copy / "hf").exists()


def test_a_pooled_hard_link_left_by_an_older_store_is_broken_on_the_next_run(
        copy: Path, capsys) -> None:
    pooled = sorted((copy / "store" / "images").glob("*/*.png"))[0]
    source = next(p for p in (copy / "ingest" / "images").rglob("*.png")
                  if file_sha256(p) == pooled.name.split(".")[0])
    pooled.unlink()
    os.link(source, pooled)  # what stores written before this rule hold
    assert main(["filter", "--traces", str(copy / "gen"), "--store", str(copy / "store")]) == 0
    assert pooled.stat().st_nlink == 1 and source.stat().st_nlink == 1
    assert file_sha256(pooled) == file_sha256(source)


def test_the_stamp_saves_rereading_and_never_vouches_for_an_edit(copy: Path) -> None:
    from distill.core.dataset_versions import check_version

    store = DatasetStore(copy / "store")
    version = versions(copy)[0]
    first = check_version(store.version_dir(version), stamps=store.stamps_dir)
    again = check_version(store.version_dir(version), stamps=store.stamps_dir)
    assert first.ok and not first.stamped and first.hashed_bytes > 0
    assert again.ok and again.stamped and again.hashed_bytes == 0
    shard = data_shard(copy, version)
    stat = shard.stat()
    edit(shard, b'"final_answer":"', b'"final_answer":"9')
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # touch -r: mtime put back
    after = check_version(store.version_dir(version), stamps=store.stamps_dir)
    assert not after.ok and not after.stamped


# --- one damaged version never hides the healthy ones; prefixes as git's -------------------


def test_a_torn_manifest_hides_no_other_version(copy: Path, capsys) -> None:
    torn, healthy = versions(copy)
    manifest = copy / "store" / "versions" / torn / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text(manifest.read_text()[:100])
    code, out, err = run(["datasets", "--store", copy / "store", "list", "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and [v["version"] for v in listed] == [healthy, torn]
    assert "damaged" in listed[1] and "manifest.json" in listed[1]["damaged"]
    code, _, err = run(["datasets", "--store", copy / "store", "export", healthy[:5],
                        "--out", copy / "h.jsonl"], capsys)
    assert code == 0 and (copy / "h.jsonl").is_file()
    code, _, err = run(["datasets", "--store", copy / "store", "export", torn[:5],
                        "--out", copy / "t.jsonl"], capsys)
    assert code == 2 and "manifest.json" in one_error(err)
    code, out, _ = run(["datasets", "--store", copy / "store", "export", "latest",
                        "--out", copy / "l.jsonl"], capsys)
    assert code == 0


def test_prefixes_resolve_as_gits_do(copy: Path) -> None:
    store = DatasetStore(copy / "store")
    first, second = versions(copy)
    assert store.resolve(first[:4]) == first and store.resolve(first.upper()) == first
    with pytest.raises(DistillError, match="too short .* at least 4 hex characters"):
        store.resolve(first[:3])
    with pytest.raises(DistillError, match="not a version id"):
        store.resolve("v1.0")
    twin = first[:6] + ("0" if first[6] != "0" else "1") + "f" * 57
    shutil.copytree(store.version_dir(second), store.version_dir(twin))
    with pytest.raises(DistillError, match=f"ambiguous: 2 versions start with it .*{twin[:16]}"):
        store.resolve(first[:6])
    assert store.resolve(first[:7]) == first


# --- exports: atomic, cleaned up after a kill, every file-system failure one line -----------


def test_what_a_dead_export_left_beside_out_is_removed_by_the_next(copy: Path) -> None:
    version = versions(copy)[0]
    out = copy / "export" / "x.jsonl"
    out.parent.mkdir()
    (out.parent / ".x.jsonl.tmp-999999").write_text("half")  # pid 999999: gone
    (out.parent / ".x.jsonl.tmp-999999.cache").mkdir()
    assert main(["datasets", "--store", str(copy / "store"), "export", version, "--out",
                 str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.jsonl"]


@pytest.mark.slow  # two interpreters importing datasets: ~25 s on the 2-core box
def test_a_killed_export_leaves_nothing_the_next_one_does_not_remove(copy: Path) -> None:
    version = versions(copy)[0]
    out = copy / "export" / "hf"
    command = [sys.executable, "-m", "distill", "datasets", "--store", str(copy / "store"),
               "export", version, "--format", "hf", "--out", str(out)]
    env = {**os.environ, "DISTILL_PROGRESS": "0"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(out.parent.glob(".hf.tmp-*")) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = [p.name for p in out.parent.glob(".hf.tmp-*")]
    assert left and not out.exists(), "the kill should land while the export writes"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["hf"]
    import datasets

    kept = DatasetStore(copy / "store").manifest(version).counts["kept"]
    assert len(datasets.load_from_disk(str(out))) == kept


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder nothing can be written into, also by root (a read-only tmpfs)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_export_file_system_failures_are_one_line(copy: Path, read_only_dir: Path,
                                                  capsys) -> None:
    version = versions(copy)[0]
    store = ["datasets", "--store", copy / "store"]
    (copy / "a-file").write_text("x")
    cases = [(["export", version, "--out", copy / "a-file" / "x.jsonl"], "a-file"),
             (["export", version, "--out", read_only_dir / "x.jsonl"], str(read_only_dir)),
             (["export", version, "--format", "trl", "--out", read_only_dir / "t"],
              str(read_only_dir))]
    for args, named in cases:
        code, _, err = run([*store, *args], capsys)
        assert code == 2 and named in one_error(err), err
    shutil.rmtree(copy / "store" / "images")  # the image pool gone
    code, _, err = run([*store, "export", version, "--out", copy / "y.jsonl"], capsys)
    assert code == 2 and "image file not found" in one_error(err)
    data_shard(copy, version).unlink()  # a shard missing
    code, _, err = run([*store, "export", version, "--out", copy / "z.jsonl"], capsys)
    assert code == 2 and "data/part-00000.jsonl: missing" in one_error(err)
    assert not list(copy.glob("*.jsonl")) and not list(copy.glob(".*.tmp-*"))


# --- policies must fit their input; an empty version only when asked ------------------------


@pytest.mark.parametrize(("policy", "field", "said"), [
    ("splits: [trian]", "splits", "'trian' is not a split of the input"),
    ("per_item: {teacher_preference: [alpah]}", "per_item.teacher_preference",
     "'alpah' is not a teacher of the input"),
])
def test_a_policy_naming_what_the_input_lacks_is_refused(copy: Path, capsys, policy: str,
                                                         field: str, said: str) -> None:
    path = copy / "policy.yaml"
    path.write_text(policy + "\n")
    code, _, err = run(["filter", "--traces", copy / "gen", "--store", copy / "s2",
                        "--policy", path], capsys)
    line = one_error(err)
    assert code == 2 and f"policy.yaml: field '{field}': {said}" in line
    assert "did you mean" in line and not (copy / "s2" / "versions").exists()


def test_an_empty_version_is_published_only_when_asked(copy: Path, capsys) -> None:
    path = copy / "nothing.yaml"
    path.write_text("rules: {correctness: wrong}\n")
    args = ["filter", "--traces", copy / "gen", "--store", copy / "s3", "--policy", path]
    code, _, err = run(args, capsys)
    assert code == 2 and "keeps none of the" in one_error(err) and "--allow-empty" in err
    assert not (copy / "s3" / "versions").exists()
    code, out, _ = run([*args, "--allow-empty"], capsys)
    assert code == 0 and len(out.strip().splitlines()[-1]) == 64


# --- eval options: one line naming the option and what it takes -----------------------------


def test_eval_options_are_checked_before_any_model_runs(copy: Path, read_only_dir: Path,
                                                        capsys) -> None:
    base = ["eval", "--model", "engine:builtin:knn", "--data", copy / "ingest", "--no-cache",
            "--out", copy / "results"]
    cases = [(["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
             (["--batch-size", "-2"], "'--batch-size': -2 is not in the range x>=1"),
             (["--max-new-tokens", "0"], "'--max-new-tokens': 0 is not in the range x>=1"),
             (["--engine-option", "base_url=localhost:8000"], "option 'base_url'")]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--device", "cuda:7"], "--device 'cuda:7': this machine has no CUDA"))
    for extra, said in cases:
        code, _, err = run([*base, *extra], capsys)
        assert code == 2 and said in one_error(err), err
    code, _, err = run([*base[:-1], read_only_dir / "r"], capsys)
    assert code == 2 and "--out cannot be written" in one_error(err)
    code, _, err = run([*base[:5], "--cache-dir", read_only_dir / "c", "--out",
                        copy / "results"], capsys)
    assert code == 2 and "--cache-dir cannot be written" in one_error(err)
    assert not (copy / "results").exists() or not list((copy / "results").glob("*.json"))


# --- compare checks stored metrics against the items ----------------------------------------


@pytest.mark.parametrize(("change", "said"), [
    ({"accuracy": math.nan}, "field 'metrics.accuracy': nan is not a finite number"),
    ({"accuracy": 0.999}, "field 'metrics.accuracy': stored 0.999, but its 10 item(s) give 0.6"),
    ({"n": -5.0}, "field 'metrics.n': stored -5, but its 10 item(s) give 10"),
    ({"n": None}, "field 'metrics.n': required metric is missing"),
    ({"accuracy": None}, "field 'metrics.accuracy': required metric is missing"),
    ({"accuracy_ci_high": 1.0}, "field 'metrics.accuracy_ci_high': stored 1"),
])
def test_compare_checks_stored_metrics_against_the_items(tmp_path: Path, capsys,
                                                         change: dict, said: str) -> None:
    data = json.loads((FIXTURES / "result_a.json").read_text())
    for key, value in change.items():
        if value is None:
            del data["metrics"][key]
        else:
            data["metrics"][key] = value
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(data).replace("NaN", "NaN"))
    code, _, err = run(["compare", FIXTURES / "result_b.json", path], capsys)
    line = one_error(err)
    assert code == 2 and str(path) in line and said in line, line


# --- names are data in every printer ---------------------------------------------------------


def test_names_with_markup_and_mathtext_are_printed_as_written(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model named vlm[/bold] crashed compare (rich); $x^2$ crashed the plot (mathtext)."""
    monkeypatch.setenv("COLUMNS", "400")  # whole names in the terminal tables
    paths = []
    for source, name in ((FIXTURES / "result_a.json", "vlm[/bold]"),
                         (FIXTURES / "result_b.json", "_under $x^2$ `tick` <b>")):
        data = json.loads(source.read_text())
        data["model"]["name"] = name
        for item in data["items"]:
            if item["category"] == "sum":
                item["category"] = "$x_{i}^2$"
        data["per_category"]["$x_{i}^2$"] = data["per_category"].pop("sum")
        paths.append(tmp_path / source.name)
        paths[-1].write_text(json.dumps(data))
    code, out, _ = run(["compare", *paths, "--out", tmp_path / "report"], capsys)
    assert code == 0 and "vlm[/bold]" in out and "$x_{i}^2$" in out
    markdown = (tmp_path / "report" / "compare.md").read_text()
    assert "vlm\\[/bold\\] (cot)" in markdown
    assert "\\_under \\$x^2\\$ \\`tick\\` \\<b\\>" in markdown
    page = (tmp_path / "report" / "compare.html").read_text()
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1].split("<table>")[0]
    assert (tmp_path / "report" / "accuracy.png").stat().st_size > 1000


def test_one_function_makes_names_safe_for_every_medium() -> None:
    name = "_m[/bold] $x$ a|b <i>\x1b[2J\nz"
    assert plain(name) == "_m\\[/bold] $x$ a|b <i>\\x1b[2J\nz"  # [2J: no tag to rich
    assert plain(name, "log") == "_m[/bold] $x$ a|b <i>\\x1b[2J\\nz"
    assert plain(name, "html") == "_m[/bold] $x$ a|b &lt;i&gt;\x1b[2J\nz"
    assert plain(name, "plot") == " _m[/bold] \\$x\\$ a|b <i>\\x1b[2J\nz"
    assert plain(name, "markdown") == "\\_m\\[/bold\\] \\$x\\$ a|b \\<i\\>\\x1b\\[2J z"
    assert plain("result-1.json", "file") == "result-1.json"
    assert plain("../etc/passwd", "file").startswith("_etc_passwd-")
    long = plain("é" * 300, "file")
    assert len(long.encode()) <= NAME_MAX and plain("é" * 301, "file") != long


def test_a_model_name_past_name_max_is_hashed_into_the_file_name(tmp_path: Path) -> None:
    from distill.evaluate.results import write_result

    result = EvalResult.model_validate_json((FIXTURES / "result_a.json").read_text())
    for name in ("m" * 400, "m" * 401):
        long = result.model_copy(update={"model": result.model.model_copy(
            update={"name": name})})
        path = write_result(long, tmp_path / "out", "x" * 300)
        assert len(path.name.encode()) <= NAME_MAX and path.is_file()
    assert len(list((tmp_path / "out").glob("*.json"))) == 2


@pytest.mark.parametrize("skip", [False, True])
def test_an_image_name_past_name_max_is_one_row_error(tmp_path: Path, capsys,
                                                      skip: bool) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    long = "x" * (NAME_MAX + 20) + ".png"
    items = write_jsonl(tmp_path / "items.jsonl", [
        {"id": "a", "image": "a.png", "question": "q?", "answer": "1"},
        {"id": "b", "image": long, "question": "q?", "answer": "1"}])
    ai2d = write_jsonl(tmp_path / "ai2d.jsonl", [
        {"question": "q?", "options": ["x", "y"], "answer": "1", "image": "a.png"},
        {"question": "q?", "options": ["x", "y"], "answer": "1", "image": long}])
    for command, source in ((["ingest", "jsonl", items], items),
                            (["eval", "convert", "ai2d", ai2d], ai2d)):
        out = tmp_path / f"out-{command[0]}-{skip}"
        code, _, err = run([*command, "--out", out, *(["--on-error", "skip"] if skip else [])],
                           capsys)
        if skip:
            rejects = [json.loads(line) for line in (out / "rejects.jsonl").open()]
            assert code == 0 and [r["reason"] for r in rejects] == ["name_too_long"]
        else:
            assert code == 2 and f"{source}:2" in one_error(err) and "longer than" in err


def test_a_version_named_in_a_store_has_a_manifest_that_names_it(copy: Path) -> None:
    """A manifest copied into another version's folder is that folder's damage."""
    first, second = versions(copy)
    store = DatasetStore(copy / "store")
    target = store.version_dir(second) / "manifest.json"
    target.chmod(0o644)
    write_json_atomic(target, DatasetManifest.model_validate_json(
        (store.version_dir(first) / "manifest.json").read_text()))
    from distill.filter.store import verify_version

    assert any("its folder is" in p for p in verify_version(store, second))
    assert [name for name, _ in store.scan()[1]] == [second]
