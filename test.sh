#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need from the OS (Open MPI for the
# multi-process tests, Jupyter's nbconvert/nbclient for the notebook run under Jupyter), restores the local
# .NET tools (notebook runners), then runs every test.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
jupyter nbconvert --version >/dev/null 2>&1 && python3 -c "import nbclient" 2>/dev/null ||
  missing+=(jupyter-nbconvert python3-nbclient python3-ipykernel jupyter-client)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]} (Debian/Ubuntu)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -f .config/dotnet-tools.json ] && dotnet tool restore >/dev/null

exec dotnet test Lasp2.sln "$@"
