#!/usr/bin/env bash
# The committed full benchmark run: every step appends to data/bench.csv (one schema, the machine, the exact
# command, the load average at the start and end of each case and whether it was oversubscribed on every row),
# then the charts, targets and the LASP-2 / LASP-1 table are drawn from the whole file. Every timing is the median
# of 5 iterations (p25/p75 beside it). Run on an idle machine: `data/run-bench.sh` (about 8 min with 3 iterations
# on the project's 2 cores; 5 iterations take longer). Step times go to data/bench-runtime.csv.
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
step sweep-inproc lasp2 bench --seq 1K..512K --world 1,2,4,8 --iterations 5 --max-seconds 2 --out $csv --charts none
# 2. The same on MPI processes (lasp2 launch), W = 2 and 4.
for w in 2 4; do
  step sweep-mpi-w$w lasp2 launch -n $w -- bench --backend mpi --seq 1K..512K --iterations 5 --max-seconds 2 --out $csv --append --charts none
done
# 3. Targets: the kernel at N = 64K for h = 1, d = 128 and h = 8, d = 64 on 2 and 1 threads; LASP-2 on 4 and on 1
#    in-process rank(s), 1 thread each (summed rank CPU against the kernel and against LASP-2 W = 1, same work).
for shape in "1 128" "8 64"; do
  set -- $shape
  step target-kernel-2t-h$1 lasp2 bench --methods chunked --seq 64K --world 1 --heads $1 --dim $2 --threads 2 --out $csv --append --charts none
  step target-kernel-1t-h$1 lasp2 bench --methods chunked,lasp2 --seq 64K --world 1,4 --heads $1 --dim $2 --threads 1 --out $csv --append --charts none
  # 4. Where the kernel's time and memory go (1 thread): data/bench-kernel-profile.csv (h = 1, d = 128; notebook 06)
  #    and data/bench-h8-kernel-profile.csv.
  [ "$1" = 1 ] && profile_out=$csv || profile_out=data/bench-h$1.csv
  step profile-h$1 lasp2 bench --profile --seq 64K --heads $1 --dim $2 --out $profile_out
done
# 5. Scale: the longest causal LASP-2 layer (h = 2, d = 64, fp32) fwd+bwd on 8 in-process ranks (oversubscribed on
#    2 cores: a memory result, not a speed claim), up to 4M tokens; a length predicted over --memory-gb is a skipped row.
#    glibc's default allocator (resident = live tensors; the tuned one-arena heap fragments to ~1.9x, docs/benchmarks.md)
#    and blocks of L = 128 (block states S = T d / L half a [B,H,C,d] tensor): 4M peaks at about 19 GB. 3 iterations
#    (a memory result; at 4M one iteration takes over a minute).
step scale env LASP2_NATIVE_HEAP=default dotnet Lasp2.Cli/bin/Release/net10.0/linux-x64/lasp2.dll bench --methods lasp2 \
  --seq 256K,512K,1M,2M,4M --world 8 --block 128 --warmup 0 --iterations 3 --max-seconds 300 --memory-gb 21 --out $csv --append --charts none
# Charts, summary and targets from the whole file.
step report lasp2 bench --report --out $csv
