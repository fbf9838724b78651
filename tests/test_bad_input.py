"""Bad input across the pipeline, through the real CLI: each case exits 2 with one line that
names the file (and the line and field where there are ones), never a traceback, and leaves
nothing that looks finished.

The stage-level tests go deeper on each kind (test_ingest, test_images, test_prompts,
test_filter_policy, ...); this table is the one place that shows every stage's answer.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main
from distill.schemas import file_sha256
from testing.generate import builtin_teacher, make_ingest, write_teachers
from tests.conftest import png_bytes, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@dataclass
class World:
    """Real, valid inputs that each case spoils one thing of."""

    root: Path
    images: Path
    samples: Path
    teachers: Path
    generated: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    images = root / "images"
    images.mkdir()
    for seed, name in enumerate(["a", "b"]):
        (images / f"{name}.png").write_bytes(png_bytes(seed))
    samples = make_ingest(root / "samples", {"train": 6, "test": 2}, shard_size=4)
    teachers = write_teachers(root / "teachers.yaml", {"knn": builtin_teacher("knn", k=1)})
    generated = root / "generated"
    assert main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(generated)]) == 0
    return World(root, images, samples, teachers, generated)


def row(i: int = 1, **fields) -> dict:
    return {"id": f"item-{i}", "image": "a.png", "question": "How many shapes?", "answer": 2,
            **fields}


def ingest_rows(bad: dict | str) -> Callable[[World, Path], list[str]]:
    """An ingest of a JSONL file whose second row is ``bad``."""
    def build(world: World, tmp: Path) -> list[str]:
        source = write_jsonl(world.images / f"items-{tmp.name}.jsonl", [row(0), bad])
        return ["ingest", "jsonl", str(source), "--out", str(tmp / "out")]
    return build


def ingest_image(make: Callable[[Path, Path], str]) -> Callable[[World, Path], list[str]]:
    """An ingest of one row whose image ``make(images, outside)`` prepares and names."""
    def build(world: World, tmp: Path) -> list[str]:
        outside = tmp / "outside"
        outside.mkdir()
        image = make(world.images, outside)
        source = write_jsonl(world.images / f"items-{tmp.name}.jsonl", [row(1, image=image)])
        return ["ingest", "jsonl", str(source), "--out", str(tmp / "out")]
    return build


def truncated_png(images: Path, _: Path) -> str:
    (images / "cut.png").write_bytes(png_bytes(4, (64, 64))[:150])
    return "cut.png"


def text_as_png(images: Path, _: Path) -> str:
    (images / "notes.png").write_text("these are notes, not pixels")
    return "notes.png"


def decompression_bomb(images: Path, _: Path) -> str:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")  # ~50 KB, 400 megapixels
    (images / "bomb.png").write_bytes(buffer.getvalue())
    return "bomb.png"


def symlink_out(images: Path, outside: Path) -> str:
    (outside / "secret.png").write_bytes(png_bytes(9))
    link = images / f"link-{outside.parent.name}.png"
    link.symlink_to(outside / "secret.png")
    return link.name


def dot_dot(images: Path, outside: Path) -> str:
    (outside / "secret.png").write_bytes(png_bytes(9))
    return os.path.relpath(outside / "secret.png", images)


def prompt_placeholder(world: World, tmp: Path) -> list[str]:
    prompt = tmp / "my-prompt.yaml"
    prompt.write_text("id: mine\nanswer_format: answer_line\n"
                      "user: 'Look closely. {{ questoin }}'\n")
    teachers = write_teachers(tmp / "teachers.yaml",
                              {"knn": {**builtin_teacher("knn", k=1), "prompt": str(prompt)}})
    return ["generate", "--samples", str(world.samples), "--teachers", str(teachers),
            "--out", str(tmp / "out")]


def torn_sample_shard(world: World, tmp: Path) -> list[str]:
    samples = shutil.copytree(world.samples, tmp / "samples")
    shard = samples / "samples" / "train" / "part-00000.jsonl"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 40])  # an earlier copy was cut mid-line
    return ["generate", "--samples", str(samples), "--teachers", str(world.teachers),
            "--out", str(tmp / "out")]


def policy_typo(world: World, tmp: Path) -> list[str]:
    policy = tmp / "policy.yaml"
    policy.write_text("name: mine\nrules:\n  corectness: correct\n")
    return ["filter", "--traces", str(world.generated), "--store", str(tmp / "store"),
            "--policy", str(policy)]


def malformed_trace_line(world: World, tmp: Path) -> list[str]:
    # the project copied whole: a manifest names its input folder relative to itself
    shutil.copytree(world.samples, tmp / world.samples.name)
    generated = shutil.copytree(world.generated, tmp / world.generated.name)
    shard = generated / "traces" / "train" / "part-00000.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"trace_key"', '"trace_kee"', 1)
    shard.write_text("".join(lines))
    # as if a buggy tool wrote it: the manifest vouches for the bad shard's bytes
    manifest_path = generated / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for ref in manifest["shards"]:
        if ref["name"].endswith("traces/train/part-00000.jsonl"):
            ref["sha256"] = file_sha256(shard)
    manifest_path.write_text(json.dumps(manifest))
    return ["filter", "--traces", str(generated), "--store", str(tmp / "store")]


def another_models_checkpoint(tmp: Path) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = tmp / "qwen2-checkpoint"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=128, hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1)).save_pretrained(folder)
    return folder


def train_init_from_another_model(world: World, tmp: Path) -> list[str]:
    return ["train", "--config", "cot", "--data", str(world.samples), "--out", str(tmp / "run"),
            "--init", str(another_models_checkpoint(tmp)), "--set", "model=test-micro",
            "--set", "target=gold", "--set", "max_steps=1", "--set", "tensorboard=false"]


def train_init_with_weights_that_do_not_fit(world: World, tmp: Path) -> list[str]:
    """A SiQ-VL folder whose weights file lost a tensor (or came from another run)."""
    from safetensors.torch import load_file, save_file

    from distill.train.siqvl.build import save_student
    from tests.train_support import micro_student

    folder = tmp / "student"
    save_student(*micro_student(), folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights.pop("projector.proj.weight", None) or weights.pop(sorted(weights)[-1])
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return ["train", "--config", "cot", "--data", str(world.samples), "--out", str(tmp / "run"),
            "--init", str(folder), "--set", "target=gold", "--set", "max_steps=1",
            "--set", "tensorboard=false"]


def eval_another_model(world: World, tmp: Path) -> list[str]:
    return ["eval", "--model", f"siqvl:{another_models_checkpoint(tmp)}", "--data",
            str(world.samples), "--out", str(tmp / "eval")]


# (build the command, what stderr must say, the output that must not appear)
CASES: dict[str, tuple[Callable[[World, Path], list[str]], list[str], str]] = {
    "malformed JSON": (ingest_rows('{"id": "x", "question": '), [":2:", "not valid JSON"],
                       "out"),
    "wrong type": (ingest_rows(row(question=["a", "list"])), [":2:", "field 'question'"], "out"),
    "unknown field": (ingest_rows(row(qestion="typo")), [":2:", "field 'qestion'",
                                                         "unknown field"], "out"),
    "empty question": (ingest_rows(row(question="   ")), [":2:", "field 'question'"], "out"),
    "missing image": (ingest_rows(row(image="nowhere.png")), [":2:", "field 'image'",
                                                              "not found"], "out"),
    "truncated image": (ingest_image(truncated_png), [":1:", "field 'image'", "truncated"],
                        "out"),
    "not an image": (ingest_image(text_as_png), [":1:", "field 'image'",
                                                 "not a readable image"], "out"),
    "decompression bomb": (ingest_image(decompression_bomb), [":1:", "field 'image'",
                                                              "pixels"], "out"),
    "path with ../": (ingest_image(dot_dot), [":1:", "field 'image'", "escapes"], "out"),
    "absolute path": (ingest_rows(row(image="/etc/hostname")), [":2:", "field 'image'",
                                                                "absolute"], "out"),
    "symlink out of the root": (ingest_image(symlink_out), [":1:", "field 'image'",
                                                            "outside the dataset root"],
                                "out"),
    "unknown prompt placeholder": (prompt_placeholder, ["my-prompt.yaml", "field 'user'",
                                                        "questoin"], "out/manifest.json"),
    "torn sample shard": (torn_sample_shard, ["part-00000.jsonl:4", "truncated"],
                          "out/manifest.json"),
    "policy signal typo": (policy_typo, ["policy.yaml:3", "corectness",
                                         "did you mean 'correctness'"], "store"),
    "malformed trace line": (malformed_trace_line, ["part-00000.jsonl:2", "field 'trace_key'"],
                             "store/versions"),
    "train --init from another model": (train_init_from_another_model,
                                        ["qwen2-checkpoint", "'qwen2' model",
                                         "not a SiQ-VL student"], "run/final"),
    "train --init with weights that do not fit": (train_init_with_weights_that_do_not_fit,
                                                  ["student", "weights do not fit",
                                                   "missing keys"], "run/final"),
    "eval of another model's checkpoint": (eval_another_model,
                                           ["qwen2-checkpoint", "field 'model_type'",
                                            "not a SiQ-VL checkpoint"],
                                           "eval/result.json"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_gets_a_located_error_and_exit_2(case: str, world: World,
                                                   tmp_path: Path) -> None:
    build, expected, must_not_exist = CASES[case]
    done = subprocess.run([sys.executable, "-m", "distill", *build(world, tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DISTILL_PROGRESS": "0", "PYTHONPATH": str(REPO)})
    err = done.stderr
    assert done.returncode == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err
    for words in expected:
        assert words in error_lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / must_not_exist).exists()
