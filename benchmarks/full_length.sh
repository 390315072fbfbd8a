#!/usr/bin/env bash
# Full-length training of the four networks (benchmarks/sweep-full-length.toml: 100 epochs each)
# on near-native FER2013 blocks, then the table of PublicTest figures, with the device named.
# Meant for a GPU (goal: all four in at most 10 minutes on one H100-class GPU); on a CPU it is
# tested with a tiny run:
#   EPOCHS=1 SHARDS=path/to/small/shards OUT=/tmp/fl EXTRA='model_kwargs={"widths":[8,16,32]}' \
#       benchmarks/full_length.sh
# Environment: SOURCE (raw FER2013, preprocessed into SHARDS when SHARDS has no manifest),
# SHARDS, OUT, EPOCHS, PYTHON, EXTRA (more KEY=JSON overrides for every run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SOURCE=${SOURCE:-../shared/data/fer2013}
SHARDS=$(realpath -m "${SHARDS:-bench-out/fer2013-native}")
OUT=$(realpath -m "${OUT:-bench-out/full-length}")
EPOCHS=${EPOCHS:-100}
mkdir -p "$OUT"

if [ ! -f "$SHARDS/manifest.json" ]; then
    "$PYTHON" -m cli preprocess "$SOURCE" "$SHARDS" --dataset fer2013 --face aligned \
        --eyes-size 16x48 --mouth-size 16x32 --face-size 48x48 --quiet
fi
"$PYTHON" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', \
torch.__version__)" | tee "$OUT/device.txt"
start=$(date +%s)
# shellcheck disable=SC2086  # EXTRA is a list of KEY=JSON words
"$PYTHON" benchmarks/bench_train.py sweep benchmarks/sweep-full-length.toml "$OUT" \
    --set "shards=\"$SHARDS\"" "epochs=$EPOCHS" ${EXTRA:-}
echo "wall time of the four runs: $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
"$PYTHON" benchmarks/bench_train.py table "$OUT"/full-*/ | tee "$OUT/table.md"
