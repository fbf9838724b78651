"""Where items come from: each source yields ``RawItem``s (or the ``InputError`` of a bad
row) and ``distill.ingest`` turns them into validated, sharded Samples."""

from distill.ingest.sources.base import RawItem, SourceRow

__all__ = ["RawItem", "SourceRow"]
