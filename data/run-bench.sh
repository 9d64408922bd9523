#!/usr/bin/env bash
# The committed full benchmark run: every step appends to data/bench.csv (one schema, the machine and the
# exact command on every row), then the charts and targets are drawn from the whole file. Run on an idle
# machine: `data/run-bench.sh` (8 min 19 s on the project's 2 cores, data/bench-runtime.csv). Step times go to data/bench-runtime.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
export TERM=dumb
dotnet build Lasp2.Cli -c Release -v q -nologo >/dev/null
lasp2() { dotnet Lasp2.Cli/bin/Release/net10.0/linux-x64/lasp2.dll "$@"; }
csv=data/bench.csv
echo "step,seconds" > data/bench-runtime.csv
step() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  echo "$name,$((SECONDS - start))" >> data/bench-runtime.csv
}

# 1. Every method in-process, N = 1K.. while an iteration is predicted under 2 s, W = 1, 2, 4, 8 (H = 2, d = 64).
step sweep-inproc lasp2 bench --seq 1K..512K --world 1,2,4,8 --iterations 3 --max-seconds 2 --out $csv --charts none
# 2. The same on MPI processes (lasp2 launch), W = 2 and 4.
for w in 2 4; do
  step sweep-mpi-w$w lasp2 launch -n $w -- bench --backend mpi --seq 1K..512K --iterations 3 --max-seconds 2 --out $csv --append --charts none
done
# 3. Targets: the kernel at N = 64K, h = 1, d = 128 on 2 and 1 threads; LASP-2 on 4 in-process ranks, 1 thread each.
step target-kernel-2t lasp2 bench --methods chunked --seq 64K --world 1 --heads 1 --dim 128 --threads 2 --out $csv --append --charts none
step target-kernel-1t lasp2 bench --methods chunked,lasp2 --seq 64K --world 1,4 --heads 1 --dim 128 --threads 1 --out $csv --append --charts none
# 4. Where the kernel's time and memory go (1 thread): data/bench-kernel-profile.csv.
step profile lasp2 bench --profile --seq 64K --heads 1 --dim 128 --out $csv
# 5. Scale: the longest causal LASP-2 layer (h = 2, d = 64, fp32) fwd+bwd on 8 in-process ranks, up to 2M tokens.
step scale lasp2 bench --methods lasp2 --seq 256K,512K,1M,2M --world 8 --warmup 0 --iterations 2 --max-seconds 300 --memory-gb 21 --out $csv --append --charts none
# Charts, summary and targets from the whole file.
step report lasp2 bench --report --out $csv
