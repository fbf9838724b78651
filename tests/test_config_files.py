"""Named YAML files (prompts, teacher sets, train configs, model specs, demo plans): a
missing one lists what ships, a broken one names its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.core.config_files import read_yaml_file
from distill.core.errors import InputError
from distill.core.paths import DATA_DIR
from distill.generate.teachers import load_teacher_set
from distill.train.config import load_config
from distill.train.siqvl.build import load_model_spec


def test_a_bare_name_finds_the_shipped_file() -> None:
    document = read_yaml_file("digits", DATA_DIR / "teachers", "teacher set")
    assert document.path == DATA_DIR / "teachers" / "digits.yaml"
    assert "teachers" in document.data


@pytest.mark.parametrize("loader", [load_teacher_set, load_config, load_model_spec])
def test_broken_yaml_names_file_and_line(tmp_path: Path, loader) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(InputError) as info:
        loader(path)
    assert info.value.file == str(path) and info.value.line == 3
    assert "not valid YAML" in str(info.value)


def test_a_missing_name_lists_what_ships() -> None:
    with pytest.raises(InputError, match=r"train config not found \(shipped: .*'digits-cot'"):
        load_config("digits-cott")
