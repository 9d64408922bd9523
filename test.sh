#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need from the OS (Open MPI for the
# multi-process tests, Jupyter's nbconvert/nbclient for the notebook run under Jupyter, Debian's fortunes as
# the corpus of `lasp2 train`), restores the local
# .NET tools (notebook runners), then runs every test.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
jupyter nbconvert --version >/dev/null 2>&1 && python3 -c "import nbclient" 2>/dev/null ||
  missing+=(jupyter-nbconvert python3-nbclient python3-ipykernel jupyter-client)
[ -d /usr/share/games/fortunes ] || missing+=(fortunes)   # the training corpus of `lasp2 train` (tests use data/fortunes-sample.txt)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (Debian/Ubuntu)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! /usr/bin/python3 -c "import numpy" >/dev/null 2>&1; then
  echo "test.sh: NumPy not found; installing python3-numpy (the checkpoint test reads safetensors from Python)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-numpy >/dev/null
fi

[ -f .config/dotnet-tools.json ] && dotnet tool restore >/dev/null

exec dotnet test Lasp2.sln "$@"
