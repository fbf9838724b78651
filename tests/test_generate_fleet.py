"""The openai engine over three servers on loopback with no load balancer: one is killed
mid-request and restarted on its port. Nothing is lost, nothing is written twice, the
load is spread by requests in flight, and the restarted server is used again."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.generate.engines.builtin import BuiltinDigitsEngine, BuiltinOptions
from distill.generate.engines.openai import OpenAIOptions
from distill.generate.runner import GenerateOptions, run_generate
from testing.fleet import fleet_teachers, run_fleet
from testing.generate import content_set, make_ingest, read_outputs
from testing.openai_server import EngineServer

SAMPLES, K = 60, 2


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory) -> Path:
    return make_ingest(tmp_path_factory.mktemp("fleet") / "ingest", {"val": SAMPLES},
                       shard_size=20)


def test_three_servers_one_killed_and_restarted(samples_dir, tmp_path):
    reader = BuiltinDigitsEngine("knn", BuiltinOptions())
    with EngineServer(reader) as single:  # the reference: one healthy server
        reference = tmp_path / "reference"
        run_generate(GenerateOptions(samples_dir, str(fleet_teachers(
            tmp_path / "one.yaml", single.base_url, 6)), reference))
    (tmp_path / "fleet").mkdir()
    run = run_fleet(samples_dir, tmp_path / "fleet", reader, servers=3, samples=SAMPLES, k=K)
    assert not run.rejects and len(run.keys) == len(set(run.keys)) == SAMPLES * K
    assert run.content == content_set(read_outputs(reference)[0])  # nothing lost or twice
    assert not run.leftovers
    assert all(n > 0 for n in run.answered), run.answered  # spread over all three
    assert run.after_restart > 0, "the restarted server was never used again"
    assert 1 <= run.reasked <= 6  # what was in flight on the victim, asked again elsewhere
    assert run.twice == 0  # a killed server's answers never arrive
    print(f"\nfleet: 3 servers, one killed after {run.answered[1]} answers and restarted: "
          f"{run.requests} requests in {run.seconds:.2f} s ({run.rate:.0f} req/s); answers "
          f"per server {run.answered} + {run.after_restart} after the restart; lost 0, "
          f"duplicated 0, re-asked {run.reasked}")


def test_base_url_lists_are_checked():
    assert OpenAIOptions(base_url=["http://a/v1", "http://b/v1"]).urls == ["http://a/v1",
                                                                          "http://b/v1"]
    with pytest.raises(ValueError, match="twice"):
        OpenAIOptions(base_url=["http://a/v1", "http://a/v1"])
    with pytest.raises(ValueError, match="at least one"):
        OpenAIOptions(base_url=[])
