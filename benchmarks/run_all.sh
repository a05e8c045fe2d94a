#!/usr/bin/env bash
# Run every speed benchmark with its defaults, one after the other; results go to benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
for name in train_step preprocessing padding prompt_scoring precision pretraining inference tune; do
    echo "=== bench_${name}.py"
    "$PYTHON" "benchmarks/bench_${name}.py" "$@"
done
