"""Offline chain-of-thought distillation for small vision-language models.

Stages: ingest -> generate -> filter -> (train) -> eval/compare. Each stage reads
shards and writes shards plus a manifest; the records in ``schemas`` are the contract.
"""

__version__ = "0.1.0"
