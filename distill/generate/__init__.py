"""`distill generate`: run teacher VLMs over Sample shards and write Trace shards.

* ``engines/``  one interface (``Engine.generate``) and its backends: builtin, openai, hf, vllm
* ``teachers``  the teacher-set YAML: which teacher answers which category, prompt, k
* ``runner``    sharded, resumable, exactly-once generation of one input shard at a time
* ``cli``       the ``distill generate`` command
"""
