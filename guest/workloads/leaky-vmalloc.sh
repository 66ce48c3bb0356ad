#!/bin/sh
# summary: ask the leaky test module to vmalloc a PAGES-page area and never free it (a vmalloc leak)
# usage: leaky-vmalloc [PAGES=256]
# requires: module leaky
# Its pages must be a `leak` at leaky_vmalloc_leak, PAGES per call.
set -e
pages=${1:-256}
echo "$pages" >/sys/kernel/debug/leaky/vmalloc
