"""The filter stage: score every trace into signals, select with a policy, drop exact and
near duplicates, keep eval items out, and publish immutable, versioned datasets."""
