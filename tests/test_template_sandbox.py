"""A template is data: a prompt file, a judge rubric or a chat template shared by someone
else can never run code here (distill.core.templates).

Each payload below writes a marker file (or reads one) when rendered in a plain Jinja
environment; in the toolkit it is refused with one line naming the file, and the marker
never appears."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jinja2
import pytest

from distill.cli import main
from distill.core.errors import InputError
from distill.core.paths import DATA_DIR, PROMPTS_DIR
from distill.core.prompts import load_prompt
from distill.core.templates import (
    TEMPLATE_ERRORS,
    check_renders,
    check_template,
    sandboxed_environment,
)
from distill.schemas import ImageRef, Sample
from testing.generate import builtin_teacher, make_ingest, read_outputs, write_teachers

SAMPLE = Sample(id="s", image=ImageRef(path="a.png", sha256="0" * 64), question="How many?",
                answer="3", answer_type="number", category="count", source="t")

# Known Jinja server-side template injection payloads (the published SSTI classes: globals
# of the default helpers, the object graph from a string, the attr filter and string
# concatenation that hide a dunder, str.format, loaders, and memory bombs folded at
# compile time). MARKER is replaced by the marker file's path.
PAYLOADS = {
    "cycler globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "joiner globals": "{{ joiner.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "namespace": "{{ namespace.__init__.__globals__.os.system('touch MARKER') }}",
    "subclasses": "{{ question.__class__.__mro__[1].__subclasses__() }}",
    "item access": "{{ question['__class__']['__mro__'] }}",
    "attr filter": "{{ (question|attr('__cla' ~ 'ss__')).__base__ }}",
    "self reference": "{{ self.__init__.__globals__.__builtins__.open('MARKER', 'w') }}",
    "str.format": "{{ '{0.__class__.__mro__}'.format(question) }}",
    "include": "{% include 'MARKER' %}",
    "import": "{% import 'os' as os %}{{ os.system('touch MARKER') }}",
    "power bomb": "{{ question }}{{ 9 ** 9 ** 9 }}",
    "repeat bomb": "{{ question * 100000000 }}",
    "range bomb": "{% for i in range(100000000) %}{{ i }}{% endfor %}",
}


def _prompt_file(folder: Path, user: str, marker: Path) -> Path:
    path = folder / "shared-prompt.yaml"
    path.write_text(json.dumps({"id": "shared", "system": "Be brief.",
                                "user": user.replace("MARKER", str(marker)),
                                "answer_format": "answer_line"}), encoding="utf-8")
    return path


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_a_payload_in_a_prompt_file_is_refused_when_loaded(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "PWNED"
    path = _prompt_file(tmp_path, payload, marker)
    with pytest.raises(InputError) as info:
        load_prompt(path)
    assert info.value.file == str(path) and info.value.field == "user"
    assert "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_the_sandbox_alone_stops_every_payload(tmp_path: Path, payload: str) -> None:
    """Without the load-time checks (defence in depth), the sandboxed environment itself
    refuses each payload when rendered."""
    marker = tmp_path / "PWNED"
    source = payload.replace("MARKER", str(marker))
    with pytest.raises(TEMPLATE_ERRORS):
        sandboxed_environment().from_string(source).render(question="q")
    assert not marker.exists()


def test_the_same_payload_runs_in_a_plain_jinja_environment(tmp_path: Path) -> None:
    """The payloads above are real: the one a plain environment renders writes its marker
    (what `distill generate` did before templates were sandboxed)."""
    marker = tmp_path / "PWNED"
    jinja2.Environment().from_string(
        PAYLOADS["cycler globals"].replace("MARKER", str(marker))).render(question="q")
    assert marker.exists()


def test_a_payload_behind_a_branch_fails_at_render_naming_the_file(tmp_path: Path) -> None:
    """A payload only some items reach (so the load-time trial render misses it) is
    stopped by the sandbox when an item reaches it: one line naming the prompt file."""
    marker = tmp_path / "PWNED"
    hidden = ("{% if category == 'secret' %}{{ (question|attr('_' ~ '_class__')) }}{% endif %}"
              "{{ question }}")
    path = _prompt_file(tmp_path, hidden, marker)
    prompt = load_prompt(path)
    assert prompt.render(SAMPLE)[1] == "How many?"
    with pytest.raises(InputError, match="unsafe") as info:
        prompt.render(SAMPLE.model_copy(update={"category": "secret"}))
    assert info.value.file == str(path) and info.value.field == "user"


def test_generate_with_a_payload_prompt_exits_naming_the_file_and_runs_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = make_ingest(tmp_path / "items", {"train": 4})
    marker = tmp_path / "PWNED"
    prompt = _prompt_file(tmp_path, PAYLOADS["lipsum globals"], marker)
    teacher = builtin_teacher() | {"prompt": str(prompt), "options": {"pool_seed": 0}}
    teachers = write_teachers(tmp_path / "teachers.yaml", {"knn": teacher})
    code = main(["generate", "--samples", str(samples), "--teachers", str(teachers),
                 "--out", str(tmp_path / "traces")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(prompt) in err and err.count("\n") == 1
    assert read_outputs(tmp_path / "traces") == ([], [])


def test_shipped_prompts_and_rubrics_pass_the_sandbox_unchanged() -> None:
    """The sandbox takes nothing a real prompt uses: every shipped prompt still loads."""
    for path in sorted(PROMPTS_DIR.glob("*.yaml")):
        kind = ("judge" if "judge" in path.stem else "extract" if "extract" in path.stem
                else "student" if path.stem.startswith("question-") else "teacher")
        assert load_prompt(path, kind=kind).id


def test_the_sandbox_keeps_jinja_logic_a_prompt_needs() -> None:
    env = sandboxed_environment(trim_blocks=True)
    source = ("{% if choices %}{{ choices|upper }}{% else %}{{ question|trim }} "
              "({{ answer_type|replace('_', ' ') }}){% endif %}{{ '!' * 3 }}")
    check_template(env, source)
    check_renders(env, source, [{"choices": None, "question": " q ", "answer_type": "yes_no"}])
    rendered = env.from_string(source).render(choices=None, question=" q ",
                                              answer_type="yes_no")
    assert rendered == "q (yes no)!!!"


def test_a_chat_template_payload_in_a_model_folder_does_not_run(tmp_path: Path) -> None:
    """Chat templates are rendered by transformers (a student folder's tokenizer, the HF
    engine's processor, vLLM through transformers): in its immutable sandbox."""
    from transformers import AutoTokenizer

    folder = tmp_path / "shared-model"
    shutil.copytree(DATA_DIR / "models" / "tiny-tokenizer", folder)
    marker = tmp_path / "PWNED"
    (folder / "chat_template.jinja").write_text(
        PAYLOADS["cycler globals"].replace("MARKER", str(marker)), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with pytest.raises(jinja2.exceptions.SecurityError):
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert not marker.exists()
