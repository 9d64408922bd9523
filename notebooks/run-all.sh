#!/usr/bin/env bash
# Re-executes every notebook headless with dotnet-repl (the local tool) and saves it in place with its
# outputs: the same code path as the NotebookTests freshness check, in write mode. Run it after changing
# a notebook or the library, then commit the notebooks. Usage: notebooks/run-all.sh [name-filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export TERM=dumb
dotnet tool restore >/dev/null
filter="FullyQualifiedName~NotebookTests"
[ $# -gt 0 ] && filter="$filter&DisplayName~$1"
LASP2_WRITE_NOTEBOOKS=1 dotnet test property-tests --filter "$filter" --logger "console;verbosity=normal" |
  grep -E "executed in|Passed |Failed |error|Error" || true
ls -la notebooks/*.ipynb
