"""Other evaluation harnesses, in and out: import a finished lmms-eval or VLMEvalKit run as an
EvalResult (so compare, its HTML page and lineage work on it), and write our eval sets as
lmms-eval tasks (so any lmms-eval model can be scored on our items)."""
