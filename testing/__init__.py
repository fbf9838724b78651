"""Builders shared by ``tests/`` and ``bench/``: synthetic shards and folders, engine
servers on loopback, fleets and Ray clusters of local processes, and where the rebuilt
real-output answer corpus is found (``real_corpus``).

The one place both import from: no test imports ``bench/`` and no benchmark imports
``tests/``. It sits beside them (not inside the ``distill`` package that ships) and imports
the toolkit only, never ``tests`` or ``bench``.
"""
