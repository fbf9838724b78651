"""The shared core, under every stage: durable shards, errors, images, answer judging,
prompts, config loading, eval sets, progress, executors and the predictor interface.
It imports only the records (``distill.schemas``)."""
