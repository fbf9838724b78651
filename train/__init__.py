"""The student: SiQ-VL, its processor, and the optimized training loop (``distill train``)."""
