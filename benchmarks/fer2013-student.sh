#!/usr/bin/env bash
# The shipped fer2013 model's whole recipe (issue 29), teachers included, as one script: the three
# teachers (two-branch seeds 0 and 1, 100 epochs; two-branch-face with mixup, 50 epochs), then the
# student (two-branch-face, 100 epochs, seed 1, learning from the labels and the teachers' averaged
# probabilities), all on one holdout (seed 0) of FER2013 Training, on which every setting was
# chosen; then the final fit: the same student on the whole of Training, the holdout included (no
# validation, the last epoch kept). Each run resumes where it stopped and a finished one is kept, so
# the script can be run again after an interruption. About 6 hours of training with both cores of a
# 2-core CPU (the teachers about 50 minutes each, the student 101, the final fit about 99;
# BENCHMARKS.md). Ship the final fit, carded and viewed with the student that chose its settings:
#   python benchmarks/ship_model.py "$OUT"/kd3-two-branch-face-100ep-s1-all fer2013 --machine "..." \
#       --recipe benchmarks/fer2013-student.sh --holdout-run "$OUT"/kd3-two-branch-face-100ep-s1
#   python benchmarks/choose_tta.py fer2013 "$SHARDS" --ship fer2013 --views-of "$OUT"/kd3-two-branch-face-100ep-s1
# Tested with a tiny run:
#   SHARDS=path/to/small/shards OUT=/tmp/st EXTRA='epochs=1 model_kwargs={"widths":[8,16]}' \
#       benchmarks/fer2013-student.sh
# Environment: SOURCE (raw FER2013, preprocessed into SHARDS when SHARDS has no manifest),
# SHARDS, OUT, PYTHON, EXTRA (more KEY=JSON overrides for every run).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
SOURCE=${SOURCE:-../shared/data/fer2013}
SHARDS=$(realpath -m "${SHARDS:-bench-out/fer2013-native}")
OUT=$(realpath -m "${OUT:-bench-out/student}")
mkdir -p "$OUT"

if [ ! -f "$SHARDS/manifest.json" ]; then
    "$PYTHON" -m cli preprocess "$SOURCE" "$SHARDS" --dataset fer2013 --face aligned \
        --eyes-size 16x48 --mouth-size 16x32 --face-size 48x48 --quiet
fi

run() {  # SWEEP_FILE RUN_NAME [KEY=JSON ...]: one run of a sweep file, alone on both cores
    local sweep=$1 name=$2
    shift 2
    # shellcheck disable=SC2086  # EXTRA is a list of KEY=JSON words
    "$PYTHON" benchmarks/bench_train.py sweep "benchmarks/$sweep" "$OUT" --only "$name" \
        --set "shards=\"$SHARDS\"" "threads=2" "$@" ${EXTRA:-}
}

run sweep-full-cpu.toml full-two-branch-100ep
run sweep-seeds-mixup.toml full-two-branch-100ep-s1
run sweep-seeds-mixup.toml mixup-two-branch-face-50ep-s1
# the student and its final fit learn from the three teachers trained above
TEACHERS="teachers=[\"$OUT/full-two-branch-100ep\", \"$OUT/full-two-branch-100ep-s1\", \"$OUT/mixup-two-branch-face-50ep-s1\"]"
run sweep-student.toml kd3-two-branch-face-100ep-s1 "$TEACHERS"
run sweep-student.toml kd3-two-branch-face-100ep-s1-all "$TEACHERS"
