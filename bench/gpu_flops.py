"""Model FLOPs of a training pass of the SiQ-VL student, and the dense bf16 peak of a card:
the two halves of MFU in bench/gpu_throughput.py.

Counted (multiply-add = 2 FLOPs), per example of n tokens (image tokens included) with
one image and L label tokens:

* LLM linear layers: 2 x (non-embedding weights) x n forward. Backward: the activation
  gradients always (the trained projector sits below the LLM), the weight gradients only
  where the LLM trains: x2 frozen, x3 trained in all.
* causal attention: QK^T and AV over the lower triangle, 2 n^2 x (query width) per layer
  forward, twice that backward (x3 in all).
* LM head on label tokens only (the loss never builds other logits): 2 V d L, x2 or x3.
* vision tower, forward only (frozen, under no_grad): 2 x weights x patches plus its
  bidirectional attention 4 P^2 d per layer; projector x3 (trained).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Dense (no sparsity) bf16 tensor-core peaks, TFLOPS, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0,
    "H100 PCIe": 756.0, "A100": 312.0, "L40S": 362.1, "RTX PRO 6000": 503.8,
    "B200": 2250.0,
}
DRY_RUN_PEAK = 1.0  # a nominal 1 TFLOPS: exercises the MFU code on a CPU, means nothing


def peak_tflops(device: str, dry_run: bool) -> float:
    if dry_run:
        return DRY_RUN_PEAK
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name.lower() in device.lower():
            return peak
    # One GPU call: an unknown card still gets its rates measured, MFU is left blank.
    print(f"unknown card {device!r}: MFU not computed (pass --peak-tflops, dense bf16)")
    return float("nan")


def pass_flops(student: Path, lengths: np.ndarray, label_counts: np.ndarray, *,
               llm_trained: bool) -> float:
    config = json.loads((Path(student) / "config.json").read_text(encoding="utf-8"))
    text, vision = config["text_config"], config["vision_config"]
    d, layers = text["hidden_size"], text["num_hidden_layers"]
    head_dim = text.get("head_dim") or d // text["num_attention_heads"]
    q_width = head_dim * text["num_attention_heads"]
    kv_width = head_dim * text["num_key_value_heads"]
    llm_weights = layers * (d * (q_width + 2 * kv_width) + q_width * d
                            + 3 * d * text["intermediate_size"])
    n = lengths.astype(np.float64)
    factor = 3.0 if llm_trained else 2.0
    llm = factor * 2 * llm_weights * n.sum()
    attention = 3.0 * 2 * layers * q_width * (n ** 2).sum()
    head = factor * 2 * text["vocab_size"] * d * label_counts.astype(np.float64).sum()
    patches = (config["image_size"] // vision["patch_size"]) ** 2
    dv = vision["hidden_size"]
    tower = vision["num_hidden_layers"] * (
        2 * (4 * dv * dv + 2 * dv * vision["intermediate_size"]) * patches
        + 4 * patches ** 2 * dv)
    r = config["pixel_shuffle_factor"]
    projector = 3.0 * 2 * (dv * r * r) * d * (patches // (r * r))
    return float(llm + attention + head + len(n) * (tower + projector))
