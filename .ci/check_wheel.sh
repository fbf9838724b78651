#!/usr/bin/env bash
# The toolkit as a user gets it from an index: build the wheel, install it into a clean venv
# from the lock, and run `distill demo --quick` and `distill eval convert` from an unrelated
# folder that holds a user's own train.py and schemas.py. Fails if the wheel misses any
# shipped file (prompts, data, configs, the tiny tokenizer) or imports from the checkout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3.11}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/distill-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)

"$PYTHON" -m venv "$WORK/build-env"
"$WORK/build-env/bin/python" -m pip install -q --disable-pip-version-check build
"$WORK/build-env/bin/python" -m build -q --wheel --outdir "$WORK/dist" "$ROOT" >/dev/null
wheel=$(ls "$WORK"/dist/distill_vlm-*.whl)
echo "built $(basename "$wheel")"

"$PYTHON" -m venv "$WORK/venv"
PIP=("$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt")
"${PIP[@]}" torch
"${PIP[@]}" "$wheel"

user=$WORK/user-folder
mkdir -p "$user/bench"
printf 'raise SystemExit("the user'"'"'s train.py was imported")\n' > "$user/train.py"
cp "$user/train.py" "$user/schemas.py"
cd "$user"
# No path into the checkout may leak in: the wheel alone must carry everything.
env -u PYTHONPATH -u DISTILL_HOME "$WORK/venv/bin/distill" demo --quick --out demo-quick
test -s demo-quick/report/demo.md

"$WORK/venv/bin/python" - <<'PY'
import json
from PIL import Image
Image.new("RGB", (8, 8), "white").save("bench/plot.png")
rows = {"1": {"pid": "1", "question": "How many bars?", "image": "plot.png",
              "answer": "3", "question_type": "free_form", "answer_type": "integer",
              "metadata": {"task": "figure question answering"}}}
json.dump(rows, open("bench/testmini.json", "w"))
PY
env -u PYTHONPATH -u DISTILL_HOME "$WORK/venv/bin/distill" eval convert mathvista \
  bench/testmini.json --out converted
test -s converted/manifest.json
echo "wheel check passed in $(( $(date +%s) - started )) s (from $(pwd), outside the checkout)"
