"""Offline chain-of-thought distillation for small vision-language models.

Stages: ingest -> generate -> filter -> (train) -> eval/compare. Each stage reads
shards and writes shards plus a manifest; the records in ``distill.schemas`` are the contract.
"""

import os as _os

from distill._one_package import check_links as _check_links

__version__ = "0.1.0"

_check_links(_os.path.dirname(__file__))
