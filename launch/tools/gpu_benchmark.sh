#!/usr/bin/env bash
# The GPU benchmark (MFU of the train step at scale): the ~1B causal decoder (sequence 2048) and
# the FLOP-matched
# encoder-decoder, one GPU, `objectax bench model` on synthetic batches; prints MFU for each.
#
#   bash launch/gpu_benchmark.sh            # on a GPU host (jax with CUDA, flax, optax, orbax)
#   bash launch/gpu_benchmark.sh --dry_run  # the same commands at the tiny size, on any CPU
#
# Run from the repository root. Needs no TensorFlow or seqio. If objectax or gin-config is
# not importable it installs them (no network: objectax from this checkout, gin-config from
# a wheel in .whl/ if there is one) into a temporary folder put on PYTHONPATH. XLA flags:
# launch/launchers.py GPU_XLA_FLAGS, dropped with a warning if this jaxlib rejects one.
# Figures go to stdout and, as JSON, to $BENCH_OUT (default ./bench_out/).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
OUT_DIR="${BENCH_OUT:-bench_out}"
mkdir -p "$OUT_DIR"
DRY_RUN=0
[[ "${1:-}" == "--dry_run" ]] && DRY_RUN=1

if ! "$PYTHON" -c "import gin; gin.configurable" 2>/dev/null || ! "$PYTHON" -c "import objectax.launch.tools.bench_model" 2>/dev/null; then
  SITE="$(mktemp -d)"
  wheels=(.whl/gin_config-*.whl)
  if ! "$PYTHON" -c "import gin; gin.configurable" 2>/dev/null && [[ -e "${wheels[0]}" ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}"
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" .
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

if [[ $DRY_RUN == 0 ]]; then
  FLAGS="$("$PYTHON" -c 'from objectax.launch.launchers import GPU_XLA_FLAGS; print(" ".join(GPU_XLA_FLAGS))')"
  if XLA_FLAGS="$FLAGS" "$PYTHON" -c "import jax; jax.devices()" >/dev/null 2>&1; then
    export XLA_FLAGS="$FLAGS ${XLA_FLAGS:-}"
  else
    echo "gpu_benchmark: this jaxlib rejects a GPU_XLA_FLAGS entry; running without them" >&2
  fi
  export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
  SIZE=(); STEPS=(--steps 20 --warmup 3); VOCAB=(--vocab_size 32128)
else
  SIZE=(--gin.Experiment.size=tiny --gin.Experiment.sequence_length=64 --gin.TrainConfig.batch_size=2)
  STEPS=(--steps 2 --warmup 1); VOCAB=(--vocab_size 512)
fi

bench() {  # name, then extra flags
  local name=$1; shift
  echo "=== $name ==="
  "$PYTHON" -m objectax.launch.main bench model --gin_file=run/gpu_benchmark.gin "${SIZE[@]}" \
    "${STEPS[@]}" "${VOCAB[@]}" --json "$OUT_DIR/$name.json" "$@"
}
bench causal_decoder_1b
bench encoder_decoder_1b --gin.Experiment.arch=encoder_decoder
"$PYTHON" - "$OUT_DIR" <<'PY'
import json, sys
rows = [(n, json.load(open(f"{sys.argv[1]}/{n}.json"))) for n in ("causal_decoder_1b", "encoder_decoder_1b")]
print("=== summary ===")
for name, f in rows:
  print(f"{name}: MFU {f['mfu']:.1%}, {f['tokens_per_second']:,.0f} tokens/s, step "
        f"{f['step_seconds_median'] * 1e3:.0f} ms, compile {f['compile_seconds']:.0f} s, "
        f"peak memory {f['peak_memory_gib']:.1f} GiB")
PY
