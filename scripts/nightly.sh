#!/usr/bin/env bash
# Nightly leak hunt: one `pagelab run --ci` per profile, artifacts and JUnit under one directory.
#
# Usage: scripts/nightly.sh [-o OUT] [-k KERNEL_SRC] [PROFILE[:EXPECTED_EXIT]]...
#   PROFILE          a profiles/*.toml path or name (default: default, leaky:1)
#   EXPECTED_EXIT    the exit code that counts as a pass (default 0); the leaky truth test is
#                    expected to exit 1 (its leak is over the profile's --fail-on-growth)
#   -o OUT           artifact root (default runs/nightly-<UTC timestamp>); one sub-directory per profile
#   -k KERNEL_SRC    kernel tree, tarball or Debian version (7.3) for every profile (overrides the profiles' [kernel] src)
#
# Exit status: 0 when every profile exited as expected, else the first unexpected exit code
# (1 growth, 2 usage, 3 guest kernel crash, 4 infrastructure). Summary in OUT/summary.md.
set -uo pipefail
cd "$(dirname "$0")/.."

out="runs/nightly-$(date -u +%Y%m%d-%H%M%S)"
kernel_src=""
while getopts "o:k:h" opt; do
  case "$opt" in
    o) out=$OPTARG ;;
    k) kernel_src=$OPTARG ;;
    h) sed -n '2,14p' "$0"; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- default leaky:1

[ -x .venv/bin/pagelab ] || scripts/setup-host.sh
mkdir -p "$out"
summary="$out/summary.md"
{
  echo "# pagelab nightly $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "host: $(uname -srm), $(nproc) cores; kvm: $([ -w /dev/kvm ] && echo yes || echo no)"
  echo
  echo "| profile | exit | expected | status | top suspect | growth pages | seconds |"
  echo "|---|---:|---:|---|---|---:|---:|"
} >"$summary"

worst=0
n=0
for item in "$@"; do
  n=$((n + 1))
  profile=${item%%:*}
  expected=0
  [ "$item" != "$profile" ] && expected=${item##*:}
  [ -f "$profile" ] || profile="profiles/$profile.toml"
  name=$(basename "$profile" .toml)
  # Numbered, so the same profile listed twice (e.g. "smoke smoke:1") keeps both runs' artifacts.
  dir="$out/$(printf %02d "$n")-$name"
  args=(run --profile "$profile" --ci --out "$dir")
  [ -n "$kernel_src" ] && args+=(--kernel-src "$kernel_src")
  echo "nightly: pagelab ${args[*]}"
  start=$(date +%s)
  .venv/bin/pagelab "${args[@]}" 2>&1 | tee "$dir.log"
  code=${PIPESTATUS[0]}
  secs=$(( $(date +%s) - start ))
  row=$(.venv/bin/python - "$dir/report.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError:
    print("no report | – | –")
    raise SystemExit
top = (r.get("suspects") or [{}])[0]
print(f"{r.get('status')} | {top.get('callsite', '–')} | {top.get('growth_pages', '–')}")
PY
)
  echo "| $name | $code | $expected | $row | $secs |" >>"$summary"
  if [ "$code" -ne "$expected" ] && [ "$worst" -eq 0 ]; then
    worst=$code
    [ "$worst" -eq 0 ] && worst=1  # expected a finding, got none
  fi
done
cat "$summary"
exit "$worst"
