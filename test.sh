#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need from the OS (Open MPI for the
# multi-process tests), restores the local .NET tools (notebook runner), then runs every test.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v mpirun >/dev/null 2>&1; then
  echo "test.sh: Open MPI not found; installing openmpi-bin (Debian/Ubuntu)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin >/dev/null
fi

if ! /usr/bin/python3 -c "import numpy" >/dev/null 2>&1; then
  echo "test.sh: NumPy not found; installing python3-numpy (the checkpoint test reads safetensors from Python)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-numpy >/dev/null
fi

[ -f .config/dotnet-tools.json ] && dotnet tool restore >/dev/null

exec dotnet test Lasp2.sln "$@"
