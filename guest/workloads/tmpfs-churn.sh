#!/bin/sh
# summary: write MIB MiB to a tmpfs file and delete it again (shmem pages come and go)
# usage: tmpfs-churn [MIB=64]
# Control workload: every page it allocates is freed before it returns, so it must never be a suspect.
set -e
mib=${1:-64}
dir=/run/pagelab/tmpfs
mkdir -p "$dir"
grep -q " $dir tmpfs " /proc/mounts || mount -t tmpfs -o size=90% pagelab "$dir"
dd if=/dev/zero of="$dir/churn" bs=1M count="$mib" 2>/dev/null
rm -f "$dir/churn"
