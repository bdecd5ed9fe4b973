#!/usr/bin/env bash
# The H100 training runs (issue 4): a ~20M-parameter NeoX model at 2048 context, dense (SDPA) and with
# one sparse pattern ("local(256) & causal"), a wall-clock guard of 130 s each; then, if time is left,
# a 50 s throughput control: "causal" through the same FlexAttention path.
#
#   prepare once (here, not on the GPU machine, which has no corpora):
#     spattern data prepare stdlib+python-docs+linux-docs --vocab-size 8192 --out .carry/h100data
#   then, from the repository root on the GPU machine:
#     OUT=results/train_h100 bash scripts/train_gpu.sh [--set KEY=VALUE ...]
#
# Writes $OUT/{dense,local,flexcausal}/{metrics.jsonl,run.json} and $OUT/log.txt (summaries go into the
# log); checkpoints go to /tmp. The sparse run uses backend "auto" (flex on CUDA when spattern.runtime.flex imports);
# if it fails, it is rerun with the torch reference backend, and run.json records which ran.
set -u
OUT=${OUT:-results/train_h100}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SPATTERN_CACHE=${SPATTERN_CACHE:-/tmp/spattern-cache}
LOG="$OUT/log.txt"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"; } 2>&1 | tee "$LOG"

run() {  # run NAME CONFIG [overrides...]
  local name=$1 config=$2; shift 2
  echo "=== $name: $config $*" | tee -a "$LOG"
  python3 -m spattern.cli train "$config" --set "train.out_dir=\"$OUT/$name\"" \
      --set "train.ckpt_dir=\"/tmp/spattern-ckpt/$name\"" --set train.resume=false "$@" 2>&1 | tee -a "$LOG"
  return "${PIPESTATUS[0]}"
}

run dense experiments/train_h100_dense.toml "$@"
if ! run local experiments/train_h100_local.toml "$@"; then
  echo "=== sparse run failed with backend auto; rerunning with the reference backend" | tee -a "$LOG"
  run local experiments/train_h100_local.toml --set 'model.backend="reference"' --set train.max_seconds=80 "$@"
fi
if [ "$SECONDS" -lt "${CONTROL_BEFORE_S:-300}" ]; then
  run flexcausal experiments/train_h100_flexcausal.toml "$@"
fi
python3 - "$OUT" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys, pathlib
for d in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    s = json.loads(d.read_text()); run = json.loads((d.parent / "run.json").read_text())
    print("summary", d.parent.name, json.dumps(s))
    d.unlink()  # the log keeps it: at most 8 files come back from the device
    m = [json.loads(l) for l in (d.parent / "metrics.jsonl").read_text().splitlines()]
    tps = sorted(r["tok_per_s"] for r in m if "tok_per_s" in r and r["step"] > 20) or [float("nan")]
    vals = [(r["step"], r["val_loss"]) for r in m if "val_loss" in r]
    print(f"{d.parent.name:8s} backend={s['backend']:9s} steps={s['step']} loss {s['first_loss']:.3f}->{s['final_loss']:.3f} "
          f"val={vals[-1] if vals else None} median tok/s={tps[len(tps)//2]:.0f} "
          f"params={run['params']} device={run['device_name']}")
PY
