#!/bin/sh
# summary: run one stress-ng stressor class for SECONDS (e.g. vm, malloc, mmap, pipe, sock, fork)
# usage: stress-ng CLASS [SECONDS=3]
# requires: host stress-ng
set -e
class=${1:?usage: stress-ng CLASS [SECONDS]}
secs=${2:-3}
stress-ng --"$class" 1 --timeout "${secs}s" --quiet
