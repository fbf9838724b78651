"""The student: SiQ-VL, its processor, and the optimized training loop (``distill train``).

The folder ``train/`` is imported only as ``distill.train`` (through the link
``distill/train``); see ``distill._one_package``.
"""

from distill._one_package import refuse_second_name

refuse_second_name(__name__, "distill.train", __file__)
