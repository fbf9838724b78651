"""The ingest stage: items from files, datasets, benchmarks and the embedded digits set,
validated into partitioned Sample shards (``pipeline``), with one source module per origin
(``sources``) and converters for published benchmark files (``converters``)."""
