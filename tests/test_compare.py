"""`distill compare` on two fixed result files (tests/fixtures/eval, outputs written by hand
in make_fixtures.py): the expected flips, deltas and tests; the Markdown, the PNG plot, and
the HTML page opened in headless Chromium (screenshot kept under the artifacts folder)."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from distill.cli import main
from distill.core.errors import InputError
from distill.evaluate.compare import compare_results, load_results
from distill.evaluate.metrics import mcnemar_exact
from distill.evaluate.report import to_html, to_markdown, write_reports

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
RESULT_A, RESULT_B = FIXTURES / "result_a.json", FIXTURES / "result_b.json"
RIGHT_TO_WRONG = ["digits-test-000000", "digits-test-000005"]
WRONG_TO_RIGHT = ["digits-test-000002", "digits-test-000003", "digits-test-000006"]


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (gitignored; override with
    DISTILL_TEST_ARTIFACTS)."""
    folder = Path(os.environ.get("DISTILL_TEST_ARTIFACTS",
                                 Path(__file__).resolve().parents[1] / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def comparison():
    return compare_results(load_results([RESULT_A, RESULT_B]))


def test_flips_and_deltas_of_two_fixed_results(comparison) -> None:
    (pair,) = comparison.pairs
    assert pair.same_eval_set and pair.only_in_a == pair.only_in_b == pair.mismatched == 0
    assert [f.sample_id for f in pair.flips_of("right_to_wrong")] == RIGHT_TO_WRONG
    assert [f.sample_id for f in pair.flips_of("wrong_to_right")] == WRONG_TO_RIGHT
    overall = pair.overall
    assert (overall.n, overall.accuracy_a, overall.accuracy_b) == (10, 0.6, 0.7)
    assert overall.delta == pytest.approx(0.1)
    assert overall.mcnemar_p == 1.0  # 2 vs 3 flips: 2 * (1 + 5 + 10) / 32
    deltas = {category: stats.delta for category, stats in pair.per_category.items()}
    assert deltas == pytest.approx({"count_even": 1.0, "max_minus_min": 0.0, "sum": 0.0,
                                    "sum_is_even": -0.5})
    max_min = pair.per_category["max_minus_min"]
    assert (max_min.right_to_wrong, max_min.wrong_to_right) == (1, 1)
    assert pair.per_category["count_even"].mcnemar_p == pytest.approx(mcnemar_exact(0, 2))
    # An unparseable answer that the other run got right is a flip too.
    flip = next(f for f in pair.flips if f.sample_id == "digits-test-000003")
    assert flip.before.correctness == "unparseable" and flip.after.correctness == "correct"


def test_markdown_report(comparison) -> None:
    text = to_markdown(comparison)
    assert "| student-a (cot) | evalset:test | 10 | 60.0 [" in text
    assert "| student-b (cot) | evalset:test | 10 | 70.0 [" in text
    assert "| count_even | 2 | 0.0 | 100.0 | +100.0 [" in text
    assert "| sum_is_even | 2 | 100.0 | 50.0 | -50.0 [" in text
    assert "### Flipped right -> wrong (2)" in text and "### Flipped wrong -> right (3)" in text
    assert "| digits-test-000006 | count_even | 3 | 2 | three |" in text


def test_reports_on_disk_and_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(RESULT_A), str(RESULT_B), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "student-b (cot) vs student-a (cot)" in printed
    assert "2 right->wrong, 3 wrong->right" in printed
    with Image.open(out / "accuracy.png") as plot:
        assert plot.format == "PNG" and plot.width > 400 and plot.height > 300
        colors = plot.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 10  # bars, not a blank canvas
    assert (out / "compare.md").read_text().startswith("# Eval comparison")
    # A folder stands for the result files in it.
    assert main(["compare", str(FIXTURES)]) == 0
    assert "2 right->wrong, 3 wrong->right" in capsys.readouterr().out
    # Baseline chosen by index: the flips reverse.
    assert main(["compare", str(RESULT_A), str(RESULT_B), "--baseline", "1"]) == 0
    assert "3 right->wrong, 2 wrong->right" in capsys.readouterr().out


def test_html_escapes_outputs_and_embeds_images(comparison) -> None:
    page = to_html(comparison)
    for sample_id in RIGHT_TO_WRONG + WRONG_TO_RIGHT:
        assert f'data-sample-id="{sample_id}"' in page
    assert page.count('src="data:image/png;base64,') == 5
    fresh = compare_results(load_results([RESULT_A, RESULT_B]))
    (pair,) = fresh.pairs
    hostile = pair.flips[0].after.model_copy(update={"raw_output": "<script>alert(1)</script>"})
    pair.flips[0] = type(pair.flips[0])(pair.flips[0].direction, pair.flips[0].before, hostile)
    page = to_html(fresh)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_results_on_different_items_pair_only_shared_ones(tmp_path: Path) -> None:
    from distill.evaluate.metrics import summarize
    from distill.schemas import EvalResult

    result = EvalResult.model_validate_json(RESULT_B.read_text())

    def with_items(items: list) -> EvalResult:  # metrics recomputed: compare checks them
        metrics, per_category = summarize(items)
        return result.model_copy(update={"items": items, "eval_set_hash": "1" * 64,
                                         "metrics": metrics, "per_category": per_category})

    path = tmp_path / "fewer.json"
    path.write_text(with_items(result.items[3:]).model_dump_json())
    (pair,) = compare_results(load_results([RESULT_A, path])).pairs
    assert not pair.same_eval_set and pair.only_in_a == 3 and pair.overall.n == 7
    assert [f.sample_id for f in pair.flips_of("wrong_to_right")] == WRONG_TO_RIGHT[1:]
    disjoint = tmp_path / "disjoint.json"
    disjoint.write_text(with_items([item.model_copy(update={"sample_id": "other-" + item.sample_id})
                                    for item in result.items]).model_dump_json())
    with pytest.raises(InputError, match="no items in common"):
        compare_results(load_results([RESULT_A, disjoint]))


def test_bad_result_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(RESULT_A.read_text().replace('"mode": "cot"', '"mode": "fast"', 1))
    assert main(["compare", str(RESULT_A), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "field 'mode'" in err


def _run_chromium(binary: str, args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium, offline, in its own process group so a hang is fully killed."""
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("chromium did not finish within 90 s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_html_page_opens_in_headless_chromium(comparison, tmp_path: Path) -> None:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("Debian's chromium is not installed (CI: apt-get install -y chromium)")
    paths = write_reports(comparison, tmp_path / "cmp")
    url = paths["html"].resolve().as_uri()
    dom = _run_chromium(binary, ["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shown = re.findall(r'<section class="flip (\w+)" data-sample-id="([^"]+)"', dom.stdout)
    assert shown == [("right_to_wrong", s) for s in RIGHT_TO_WRONG] + [
        ("wrong_to_right", s) for s in WRONG_TO_RIGHT]
    assert "What is the largest digit in the image minus the smallest digit?" in dom.stdout
    screenshot = artifacts_dir() / "compare_page.png"
    screenshot.unlink(missing_ok=True)
    shot = _run_chromium(binary, [f"--screenshot={screenshot}", "--window-size=1200,1800",
                                  "--hide-scrollbars", url], tmp_path / "profile-shot")
    assert shot.returncode == 0, shot.stderr[-2000:]
    with Image.open(io.BytesIO(screenshot.read_bytes())) as image:
        assert image.size == (1200, 1800)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 50  # text, tables, plot, digit images


def test_large_images_are_shrunk_for_the_page() -> None:
    from distill.evaluate.report import MAX_EMBED_SIDE, _data_url

    big = io.BytesIO()
    Image.effect_noise((1600, 1200), 60).convert("RGB").save(big, format="PNG")
    url = _data_url(big.getvalue())
    assert url.startswith("data:image/jpeg;base64,")
    import base64

    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as shrunk:
        assert max(shrunk.size) == MAX_EMBED_SIDE and shrunk.size[0] > shrunk.size[1]
    small = (FIXTURES / "evalset").glob("images/*/*.png")
    data = next(small).read_bytes()
    assert _data_url(data) == "data:image/png;base64," + base64.b64encode(data).decode()
