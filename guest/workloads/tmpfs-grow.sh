#!/bin/sh
# summary: add a MIB MiB file to a tmpfs on every call and keep it (a user-visible "leak" of shmem pages)
# usage: tmpfs-grow [MIB=8]
# Each iteration grows the shmem stack by MIB * 256 pages: the demonstration that suspects rank by growth.
set -e
mib=${1:-8}
dir=/run/pagelab/tmpfs
mkdir -p "$dir"
grep -q " $dir tmpfs " /proc/mounts || mount -t tmpfs -o size=90% pagelab "$dir"
n=0
while [ -e "$dir/grow.$n" ]; do n=$((n + 1)); done
dd if=/dev/zero of="$dir/grow.$n" bs=1M count="$mib" 2>/dev/null
