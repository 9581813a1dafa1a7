#!/usr/bin/env bash
# `make test`: every test, as two pytest sessions side by side.
#   - the node suite: the tests that run pods on the machine's one real node (chorus.controlplane.node;
#     a lock allows one per machine): the node itself, the HPA, KubeRay's RayService and the chart's
#     whole path (install, helm test, a tenant trained by a Job, upgrade, rollback, uninstall). Most of
#     its time is spent waiting on pods, image imports and autoscaler windows, so it runs beside
#   - the main suite: everything else (unit, integration against its own control plane, Ray, helm).
# Each session starts its own control plane. The node suite's output goes to a log that is printed
# when it ends; its path is printed at the start, for `tail -f`.
# Usage: tools/test.sh VENV [node|main|all] [pytest args...]
set -uo pipefail
venv="$1"; which="${2:-all}"; shift 2 || shift $#
cd "$(dirname "$0")/.."
export PATH="$venv/bin:$PATH" PYTHONSAFEPATH=1
node_tests=(tests/integration/test_node.py tests/e2e/test_hpa.py tests/e2e/test_rayservice.py
            tests/e2e/test_chart_on_node.py)

check() {  # pytest's exit status; "no tests collected" (5) is a failure too
  if [ "$1" = 5 ]; then echo "test.sh: $2: no tests collected" >&2; return 1; fi
  return "$1"
}

case "$which" in
  node) "$venv/bin/python" -m pytest -s "${node_tests[@]}" "$@"; check $? "node suite"; exit ;;
  main|all) ;;
  *) echo "usage: tools/test.sh VENV [node|main|all] [pytest args...]" >&2; exit 2 ;;
esac

ignore=(); for t in "${node_tests[@]}"; do ignore+=("--ignore=$t"); done
node_pid=""
if [ "$which" = all ]; then
  node_log="$(mktemp -t chorus-node-suite.XXXXXX.log)"
  echo "test.sh: the node suite runs alongside, logging to $node_log"
  "$venv/bin/python" -m pytest -p no:cacheprovider -s "${node_tests[@]}" "$@" >"$node_log" 2>&1 &
  node_pid=$!
  trap '[ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null' INT TERM
fi
start=$SECONDS
"$venv/bin/python" -m pytest "${ignore[@]}" "$@"; main_rc=$?
echo "test.sh: main suite ended after $((SECONDS - start)) s (status $main_rc)"
[ -z "$node_pid" ] && { check "$main_rc" "main suite"; exit; }

echo "test.sh: waiting for the node suite ($node_log) ..."
wait "$node_pid"; node_rc=$?; node_pid=""
echo "================================ node suite ================================"
cat "$node_log" && rm -f "$node_log"
echo "test.sh: node suite ended after $((SECONDS - start)) s (status $node_rc)"
# A narrowed run (PYTEST_ARGS="-k ...") may select nothing in one session: only both empty is a failure.
if [ "$main_rc" = 5 ] && [ "$node_rc" = 5 ]; then check 5 "both sessions"; exit; fi
[ "$main_rc" = 5 ] && main_rc=0
[ "$node_rc" = 5 ] && node_rc=0
[ "$main_rc" = 0 ] && [ "$node_rc" = 0 ]
