#!/usr/bin/env bash
# The hybrid-ratio question of the LASP-2 paper (Table 2 / Table 4) at toy scale: the same token budget for a
# pure linear (LLLL), 1/4 hybrid (LLLN), 1/2 hybrid (LNLN) and all-softmax (NNNN) model on Debian's fortunes,
# 3 seeds each (the seed sets the initial parameters; the data order is the same for every run), held-out loss
# every 100 steps and after the last. Model: D 128, 4 heads (d 32; softmax layers 2 KV heads), SwiGLU 384,
# vocabulary 4096, basic linear attention (the paper's Linear-Llama3), packed documents kept apart.
# Runs are compared by loss, not speed: JOBS of them run at once with one libtorch thread each (default 2, one
# per core), which also keeps a run from stalling when other work shares the cores.
# Writes data/hybrid-ratio.csv (one row per run: the last step) and data/hybrid-ratio-curves.csv (every step), then
# `lasp2 hybrid-report` prints the summary next to the paper and draws data/hybrid-ratio.html and -final.html.
# Usage: data/run-hybrid-study.sh [STEPS] [SEQ] [BATCH]   (defaults 500 x 4 x 512 tokens = 1.02M tokens per run,
# about 30 min on 2 idle cores; needs `apt-get install fortunes`, which test.sh installs).
# LASP2 may name a built lasp2 to run (default: a Release build of Lasp2.Cli).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-500}
SEQ=${2:-512}
BATCH=${3:-4}
JOBS=${JOBS:-2}
if [ -z "${LASP2:-}" ]; then
  dotnet build Lasp2.Cli -c Release -v q -nologo >/dev/null
  LASP2="dotnet Lasp2.Cli/bin/Release/net10.0/linux-x64/lasp2.dll"
fi
export LASP2 STEPS SEQ BATCH
mkdir -p runs
one_run() {  # pattern seed
  local run=runs/study-$1-seed$2
  cut -d' ' -f1 /proc/loadavg > "$run.load"
  TERM=dumb $LASP2 train --pattern "$1" --seed "$2" --steps "$STEPS" --seq "$SEQ" --batch "$BATCH" --threads 1 \
    --model-dim 128 --heads 4 --kv-heads 2 --eval-every 100 --eval-batches 16 --out "$run" > "$run.txt"
  cut -d' ' -f1 /proc/loadavg >> "$run.load"
  echo "$1 seed $2: $(tail -n 1 "$run.txt")"
}
export -f one_run
for pattern in LLLL LLLN LNLN NNNN; do for seed in 0 1 2; do echo "$pattern $seed"; done; done |
  xargs -P "$JOBS" -L 1 bash -c 'one_run "$0" "$1"'

out=data/hybrid-ratio.csv
curves=data/hybrid-ratio-curves.csv
echo "pattern,seed,steps,seq,batch,tokens,train_loss,held_out_loss,seconds,load_avg_start,load_avg_end" > "$out"
echo "pattern,seed,step,loss,val_loss,lr,grad_norm,tokens_per_s" > "$curves"
for pattern in LLLL LLLN LNLN NNNN; do
  for seed in 0 1 2; do
    run=runs/study-$pattern-seed$seed
    # log rows: step,loss,val_loss,lr,grad_norm,tokens_per_s,rss_mib,elapsed_s
    tail -n +2 "$run/log.csv" | awk -F, -v p="$pattern" -v s="$seed" '{ print p "," s "," $1 "," $2 "," $3 "," $4 "," $5 "," $6 }' >> "$curves"
    tail -n 1 "$run/log.csv" | awk -F, -v p="$pattern" -v s="$seed" -v n="$STEPS" -v q="$SEQ" -v b="$BATCH" \
      -v l0="$(head -n 1 "$run.load")" -v l1="$(tail -n 1 "$run.load")" \
      '{ print p "," s "," n "," q "," b "," n * q * b "," $2 "," $3 "," $8 "," l0 "," l1 }' >> "$out"
  done
done
$LASP2 hybrid-report --data data
