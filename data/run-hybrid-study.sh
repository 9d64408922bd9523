#!/usr/bin/env bash
# The hybrid-ratio question of the LASP-2 paper (Table 2 / Table 4) at toy scale: the same token budget for a
# pure linear (LLLL), 1/4 hybrid (LLLN), 1/2 hybrid (LNLN) and all-softmax (NNNN) model on Debian's fortunes,
# 3 seeds each (the seed sets the initial parameters; the data order is the same for every run), held-out loss
# after the last step. Writes data/hybrid-ratio.csv (one row per run).
# Usage: data/run-hybrid-study.sh [STEPS] [SEQ]   (defaults 600 x 512 tokens; needs `apt-get install fortunes`).
# LASP2 may name a built lasp2 to run (default: a Release build of Lasp2.Cli).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-600}
SEQ=${2:-512}
if [ -z "${LASP2:-}" ]; then
  dotnet build Lasp2.Cli -c Release -v q -nologo >/dev/null
  LASP2="dotnet Lasp2.Cli/bin/Release/net10.0/linux-x64/lasp2.dll"
fi
out=data/hybrid-ratio.csv
mkdir -p runs
echo "pattern,seed,steps,seq,train_loss,held_out_loss,seconds" > "$out"
for pattern in LLLL LLLN LNLN NNNN; do
  for seed in 0 1 2; do
    run=runs/study-$pattern-seed$seed
    TERM=dumb $LASP2 train --pattern "$pattern" --seed "$seed" --steps "$STEPS" --seq "$SEQ" --eval-every 0 --eval-batches 8 \
      --out "$run" > "$run.txt"
    # last log row: step,loss,val_loss,lr,grad_norm,tokens_per_s,rss_mib,elapsed_s
    tail -n 1 "$run/log.csv" | awk -F, -v p="$pattern" -v s="$seed" -v n="$STEPS" -v q="$SEQ" \
      '{ print p "," s "," n "," q "," $2 "," $3 "," $8 }' >> "$out"
    echo "$pattern seed $seed: $(tail -n 1 "$out")"
  done
done
