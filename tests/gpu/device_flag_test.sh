#!/usr/bin/env bash
# `--device cuda` never crashes: with a usable GPU the commands run; without one (or without a
# driver) they exit 1 with "no CUDA device: ..." on stderr. Runs in every CUDA build (CI too).
# usage: device_flag_test.sh JETSERVE_BINARY
set -uo pipefail
bin=$1
status=0
check() {  # name, command...
  local name=$1
  shift
  local err rc
  err=$("$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc = 0 ] || { [ "$name" = serve ] && [ $rc = 124 ]; }; then
    echo "ok   $name: ran (a CUDA device is present)"
  elif [ $rc = 1 ] && grep -q "no CUDA device" <<<"$err"; then
    echo "ok   $name: exit 1, $(grep -m1 "no CUDA device" <<<"$err")"
  else
    echo "FAIL $name: exit $rc: $err"
    status=1
  fi
}
check generate "$bin" generate --device cuda --prompt-ids 1,2,3 --max-tokens 2
check bench "$bin" bench --device cuda --context 32 --gen 2 --runs 1 --prompt 8 --no-probes
# (With a GPU the server serves until the timeout ends it: exit 124.)
check serve timeout 20 "$bin" serve --device cuda --port 0 --metrics-port -1 --http-port -1
# The CPU path is unaffected by the CUDA build.
if ! "$bin" generate --prompt-ids 1,2,3 --max-tokens 2 >/dev/null 2>&1; then
  echo "FAIL: generate on the CPU"
  status=1
fi
exit $status
