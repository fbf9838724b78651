"""Teachers scored like students: the generate stage's built-in digit readers (real
classifiers that read the pixels) evaluated on the digits test split through the engine
predictor, compared against each other, cached, and failing clearly."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from distill.cli import main
from distill.core.answers import parse_number
from distill.core.errors import DistillError
from distill.core.evalsets import load_eval_set
from distill.core.predictors import PredictorOptions, load_predictor
from distill.core.shards import read_json_model
from distill.evaluate.compare import compare_results, load_results
from distill.evaluate.runner import evaluate
from distill.ingest.pipeline import IngestOptions, ingest
from distill.ingest.sources.digits import DigitsConfig, iter_digits
from distill.schemas import EvalResult

engines = pytest.importorskip("distill.generate.engines.builtin",
                              reason="the generate stage's engines")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("engine-eval") / "digits"
    ingest(iter_digits(DigitsConfig(seed=0, counts={"test": 120})), IngestOptions(out=out))
    return out


@pytest.fixture(scope="module")
def results(digits: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine-results")
    for teacher in ("knn", "logreg"):
        assert main(["eval", "--model", f"engine:digits#{teacher}", "--data", str(digits),
                     "--out", str(root / "out"), "--cache-dir", str(root / "cache")]) == 0
    return {"knn": next((root / "out").glob("knn-*.json")),
            "logreg": next((root / "out").glob("logreg-*.json")), "cache": root / "cache"}


def test_builtin_teachers_are_scored_and_compared(results) -> None:
    knn = read_json_model(results["knn"], EvalResult)
    logreg = read_json_model(results["logreg"], EvalResult)
    for result in (knn, logreg):
        assert result.model.kind == "engine" and result.model.fingerprint is None
        assert result.generation["engine"] == "builtin" and result.generation["model"]
        assert len(result.items) == 120 and result.metrics["unparseable_rate"] == 0
        # Real readers of real scans: mostly right, not perfect.
        assert 0.8 <= result.metrics["accuracy"] <= 1.0
        assert result.metrics["mean_reasoning_words"] > 5
    assert knn.items[0].raw_output.splitlines()[-1].startswith("Answer: ")
    (pair,) = compare_results(load_results([results["knn"], results["logreg"]])).pairs
    assert pair.flips, "two different classifiers disagree somewhere"
    for flip in pair.flips:
        right = flip.before if flip.direction == "right_to_wrong" else flip.after
        wrong = flip.after if flip.direction == "right_to_wrong" else flip.before
        gold = parse_number(right.gold)
        if gold is not None:  # number questions: the right one states the gold number
            assert parse_number(right.extracted) == gold != parse_number(wrong.extracted)
    assert pair.overall.delta == pytest.approx(logreg.metrics["accuracy"]
                                               - knn.metrics["accuracy"])


def test_engine_outputs_are_cached_under_any_name(digits: Path, results) -> None:
    eval_set = load_eval_set(digits)
    options = PredictorOptions(max_new_tokens=512)
    same_teacher = load_predictor("engine:builtin:knn", options)
    run = evaluate(same_teacher, eval_set, "cot", cache_dir=results["cache"])
    assert (run.generated, run.reused) == (0, 120)  # engine:digits#knn already did them
    assert run.result.model.name == "builtin-knn"
    other_pool = load_predictor("engine:builtin:knn", PredictorOptions(
        max_new_tokens=512, engine_options=(("pool_seed", 1),)))
    assert evaluate(other_pool, eval_set, "cot", cache_dir=results["cache"]).generated == 120


class _FlakyReader(engines.BuiltinDigitsEngine):
    """The real knn reader, with the request for one chosen image failing."""

    name: ClassVar[str] = "flaky"
    fail_image: ClassVar[bytes] = b""
    permanent: ClassVar[bool] = True

    def generate(self, requests: Sequence) -> Iterator:
        from distill.generate.engines.base import EngineFailure, RequestResults

        for done in super().generate(requests):
            if done.request.images[0] == self.fail_image:
                failure = EngineFailure("server_error", "HTTP 500", permanent=self.permanent)
                yield RequestResults(done.request, [failure])
            else:
                yield done


def test_engine_failures(digits: Path, tmp_path: Path, capsys) -> None:
    from distill.core.images import read_image_bytes

    eval_set = load_eval_set(digits)
    victim = eval_set.samples[70]  # in the second chunk of 50
    _FlakyReader.fail_image = read_image_bytes(victim.image, eval_set.image_root)
    spec = f"engine:{__name__}:_FlakyReader:knn"
    _FlakyReader.permanent = True
    run = evaluate(load_predictor(spec, PredictorOptions()), eval_set, "cot",
                   cache_dir=tmp_path / "cache")
    failed = next(item for item in run.result.items if item.sample_id == victim.id)
    assert (failed.raw_output, failed.correctness) == ("", "unparseable")
    _FlakyReader.permanent = False
    with pytest.raises(DistillError, match=r"1 request\(s\) to flaky-knn failed for now"):
        evaluate(load_predictor(spec, PredictorOptions()), eval_set, "direct",
                 cache_dir=tmp_path / "cache", chunk_size=50)
    # Chunks before the failing one were kept: a rerun generates only the rest.
    _FlakyReader.fail_image = b""
    rerun = evaluate(load_predictor(spec, PredictorOptions()), eval_set, "direct",
                     cache_dir=tmp_path / "cache", chunk_size=50)
    assert (rerun.generated, rerun.reused) == (70, 50)
    assert main(["eval", "--model", "engine:digits#nobody", "--data", str(digits)]) == 2
    assert "no teacher 'nobody'" in capsys.readouterr().err
    assert main(["eval", "--model", "engine:builtin:svm", "--data", str(digits),
                 "--no-cache"]) == 2
    assert "cannot start engine 'builtin'" in capsys.readouterr().err
