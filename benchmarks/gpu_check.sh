#!/usr/bin/env bash
# One GPU check of galaxytune end to end: train configs/gz2_gpu.yaml on the GZ2 SDSS cutouts
# through every stage, then evaluate, predict (PyTorch and ONNX) and export (ONNX fp32 + int8),
# printing the wall time of each step and the accuracy. Meant to finish in under 8 minutes on
# one GPU (H100/H200 class); finetune.epochs is capped (EPOCHS, default 12) to fit.
#
# NOT RUN HERE: the machine this was written on has no GPU. It has only been checked with
# `bash -n benchmarks/gpu_check.sh`. Figures it prints belong in docs/benchmarks.md with the
# GPU named.
#
# Usage (from the repository root, with galaxytune importable):
#   bash benchmarks/gpu_check.sh DATA WEIGHTS [OUT]
#     DATA     the GZ2 catalog, e.g. ../shared/data/gz2_sdss_dr16_cutouts/labels.csv
#     WEIGHTS  backbone weights file, e.g. ../shared/weights/mobilenetv1_100.tf_quant_in1k.safetensors
#     OUT      scratch folder (default: runs/gpu_check), replaced
# Environment: PYTHON (default: python), EPOCHS (default: 12), EXTRA (more key=value overrides).
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,16p' "$0"
    exit 2
fi
DATA=$1
WEIGHTS=$2
OUT=${3:-runs/gpu_check}
PYTHON=${PYTHON:-python}
EPOCHS=${EPOCHS:-12}
GT=("$PYTHON" -m galaxytune.cli)
RUN=$OUT/run
IMAGES=$(dirname "$DATA")/images

[ -e "$DATA" ] || { echo "no data at $DATA" >&2; exit 2; }
[ -e "$WEIGHTS" ] || { echo "no weights at $WEIGHTS" >&2; exit 2; }
rm -rf "$OUT"
mkdir -p "$OUT"

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU"
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY

declare -a TIMES
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, record the wall time
    local name=$1
    shift
    local start end
    start=$(date +%s.%N)
    if ! "$@" >"$OUT/$name.log" 2>&1; then
        echo "FAILED: $name (see $OUT/$name.log)" >&2
        tail -n 20 "$OUT/$name.log" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    TIMES+=("$name $(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')")
    printf '%-14s %8.1f s\n' "$name" "$(awk -v a="$start" -v b="$end" 'BEGIN {print b - a}')"
}

step train "${GT[@]}" train --config configs/gz2_gpu.yaml --data "$DATA" --weights "$WEIGHTS" --out "$RUN" \
    finetune.epochs="$EPOCHS" trainer.progress=false ${EXTRA:-}
echo "--- stage table (val/test per stage)"
cat "$RUN/stage_table.md"

step evaluate "${GT[@]}" evaluate --model "$RUN" --data "$DATA" --json
echo "--- evaluate (the run's test split): $(tail -n 1 "$OUT/evaluate.log")"

step export "${GT[@]}" export --model "$RUN" --out "$OUT/model.onnx" --int8
grep -E "held-back|Wrote" "$OUT/export.log" || true

step predict_torch "${GT[@]}" predict --model "$RUN" "$IMAGES" --out "$OUT/pred_torch.csv"
step predict_onnx "${GT[@]}" predict --model "$OUT/model.onnx" "$IMAGES" --out "$OUT/pred_onnx.csv"
step predict_int8 "${GT[@]}" predict --model "$OUT/model.int8.onnx" "$IMAGES" --out "$OUT/pred_int8.csv"

"$PYTHON" - "$OUT" <<'PY'
import csv, sys
out = sys.argv[1]
rows = {k: {r["path"]: r["predicted_class"] for r in csv.DictReader(open(f"{out}/pred_{k}.csv"))}
        for k in ("torch", "onnx", "int8")}
n = len(rows["torch"])
for k in ("onnx", "int8"):
    same = sum(rows[k].get(p) == c for p, c in rows["torch"].items())
    print(f"predict {k} agrees with PyTorch on {same}/{n} images ({same / max(n, 1):.4f})")
PY

echo "--- wall times"
total=0
for t in "${TIMES[@]}"; do
    printf '%-14s %8.1f s\n' ${t}
    total=$(awk -v a="$total" -v b="${t#* }" 'BEGIN {print a + b}')
done
printf '%-14s %8.1f s\n' total "$total"
