"""The evaluate stage: score models on eval sets (``runner``), cache raw outputs, compute
metrics with intervals, compare results item by item, follow lineage, write reports.
Models are reached through ``distill.core.predictors``, found by name."""
