"""Run Curator (bespokelabs-curator) over prepared chat requests; runs in Curator's own
virtual environment, never in the toolkit's (see bench/generate_vs_curator.py).

    /work/venvs/curator/bin/python bench/curator_worker.py REQUESTS.jsonl OUT.jsonl \
        --base-url http://127.0.0.1:PORT/v1 --concurrency 16 --cache-dir DIR

REQUESTS.jsonl holds one {"id", "messages", "seed", ...} a line: the very messages the
toolkit's openai engine sends. Curator features used (bespokelabs-curator 0.1.31):
``curator.LLM`` with ``backend="openai"`` and ``backend_params`` ``base_url``,
``max_concurrent_requests``, ``max_requests_per_minute``, ``max_tokens_per_minute``,
``max_retries``, ``require_all_responses=False``; its response cache and resume
(``working_dir``: a rerun reads back ``responses_*.jsonl`` and asks only for rows
without a successful response). One change to Curator: its token counter for rate limits
needs tiktoken's cl100k_base file, which cannot be downloaded on this offline machine, so
its own documented fallback (1 token per 4 characters) is used instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TELEMETRY_ENABLED", "false")  # no network but loopback
os.environ.setdefault("OPENAI_API_KEY", "sk-loopback")

from bespokelabs import curator  # noqa: E402
from bespokelabs.curator.request_processor.online import (  # noqa: E402
    openai_online_request_processor as online,
)


class _NoTiktoken:
    """Makes Curator take its own 1-token-per-4-characters fallback (a TypeError)."""

    def encode(self, *args: object, **kwargs: object) -> list[int]:
        raise TypeError("tiktoken's BPE file is not available offline")


online.OpenAIOnlineRequestProcessor.get_token_encoding = lambda self: _NoTiktoken()


class Teacher(curator.LLM):
    def prompt(self, row: dict) -> list[dict]:
        # Kept as JSON text in the row: Arrow (Curator's dataset) cannot hold a list of
        # messages whose content is text for one and a list of parts for another.
        return json.loads(row["messages"])

    def parse(self, row: dict, response: str) -> dict:
        return {"id": row["id"], "text": response}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("requests")
    parser.add_argument("out")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="digits-knn")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    logging.getLogger("bespokelabs").setLevel(logging.ERROR)
    with open(args.requests, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    teacher = Teacher(
        model_name=args.model, backend="openai",
        generation_params={"temperature": rows[0]["temperature"], "top_p": rows[0]["top_p"],
                           "max_tokens": args.max_tokens, "seed": rows[0]["seed"]},
        backend_params={"base_url": args.base_url, "max_concurrent_requests": args.concurrency,
                        "max_requests_per_minute": 1_000_000,
                        "max_tokens_per_minute": 1_000_000_000, "max_retries": 3,
                        "require_all_responses": False, "request_timeout": 60})
    start = time.perf_counter()
    response = teacher([{"id": r["id"], "messages": json.dumps(r["messages"])} for r in rows],
                       working_dir=args.cache_dir)
    seconds = time.perf_counter() - start
    with open(args.out, "w", encoding="utf-8") as handle:
        for row in response.dataset:
            handle.write(json.dumps({"id": row["id"], "text": row["text"]}) + "\n")
    print(json.dumps({"seconds": seconds, "rows": len(response.dataset)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
