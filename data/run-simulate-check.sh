#!/usr/bin/env bash
# Measurements for `lasp2 simulate-check`: loopback MPI AllGather latency and bandwidth (comm-bench, W = 2), the
# single-device kernel rate of each method on 1 thread (W = 1, in-process) and the MPI runs at W = 2 and 4, all into
# data/simulate-check-bench.csv, with the load average before and after each step in data/simulate-check-load.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export TERM=dumb
# LASP2 may name a copy of the built CLI (so that rebuilding meanwhile cannot disturb the run).
lasp2() { "${LASP2:-Lasp2.Cli/bin/Debug/net10.0/linux-x64/lasp2}" "$@"; }
csv=data/simulate-check-bench.csv
load=data/simulate-check-load.txt
: > $load
step() { echo "$(date -u +%FT%TZ) before $1: $(cat /proc/loadavg)" >> $load; "${@:2}"; echo "$(date -u +%FT%TZ) after $1: $(cat /proc/loadavg)" >> $load; }
step comm-bench lasp2 launch -n 2 -- comm-bench --iterations 500 | tee -a $load
methods=lasp2,lasp1,ring-linear
step single lasp2 bench --methods chunked,$methods --world 1 --threads 1 --seq 1K..32K --iterations 3 --max-seconds 2 --out $csv --charts none
for w in 2 4; do
  step mpi-w$w lasp2 launch -n $w -- bench --backend mpi --methods $methods --seq 2K..64K --iterations 3 --max-seconds 2 --out $csv --append --charts none
done
