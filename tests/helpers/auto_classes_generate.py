"""Greedy answers from a saved SiQ-VL student through transformers' Auto classes alone.

The code the README shows for loading a student without this toolkit. CI runs it in a venv
that holds torch, transformers and pillow only (tests/test_portable_student.py), so it
imports nothing else::

    python auto_classes_generate.py STUDENT_FOLDER REQUESTS.json OUT.json MAX_NEW_TOKENS

REQUESTS.json: a list of {"system": str, "user": str, "image": path} (an empty system is
not sent). OUT.json: a list of {"tokens": [new token ids], "text": decoded text}.
"""

import json
import sys

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


def main(folder: str, requests_path: str, out_path: str, max_new_tokens: int) -> None:
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True,
                                                        dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    with open(requests_path, encoding="utf-8") as file:
        requests = json.load(file)
    outputs = []
    for request in requests:
        messages = [{"role": "system", "content": request["system"]}] if request["system"] else []
        messages.append({"role": "user", "content": [
            {"type": "image", "image": Image.open(request["image"])},
            {"type": "text", "text": request["user"]}]})
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True,
                                               tokenize=True, return_dict=True,
                                               return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        outputs.append({"tokens": new_tokens.tolist(),
                        "text": processor.decode(new_tokens, skip_special_tokens=True)})
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump(outputs, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
