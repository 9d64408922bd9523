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

[ -f .config/dotnet-tools.json ] && dotnet tool restore >/dev/null

exec dotnet test Lasp2.sln "$@"
