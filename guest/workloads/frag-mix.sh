#!/bin/sh
# summary: fill memory with 64 KiB tmpfs files, free 30 % of them as holes, then create FILES empty files
# usage: frag-mix [FILES=60000] [RESERVE_MIB=24]
# Fragmentation workload (`pagelab report --by pollution`, docs/html.md); about a minute in a 512 MiB
# TCG guest, longer with more memory (the fill is proportional to it). One awk process writes 64 KiB
# files until RESERVE_MIB is left; deleting every file whose number ends in 1, 4 or 7 leaves order-4 holes,
# 30 % of each movable pageblock. The empty files need inode and dentry slab pages (unmovable,
# reclaimable): once the few whole free blocks are taken, they are stolen from the holes, and a movable
# block changes type only when the thief takes a chunk of half the block's order or could take half of
# its pages (mm/page_alloc.c, steal_suitable_fallback), so those blocks stay movable, with foreign pages
# in them. The fillers are deleted at the end and the files kept: the mixed blocks stay for the snapshot.
# nr_inodes=0: tmpfs would otherwise stop at half the RAM's pages in inodes.
set -e
files=${1:-60000}
reserve=${2:-24}
dir=/run/pagelab/frag
mkdir -p "$dir"
grep -q " $dir tmpfs " /proc/mounts || mount -t tmpfs -o size=95%,nr_inodes=0 pagelab-frag "$dir"
fill="$dir/fill.$$"
keep="$dir/files.$$"
mkdir -p "$fill" "$keep"
avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
n=$(((avail - reserve) * 16)) # 64 KiB files: 16 a MiB
awk -v n="$n" -v dir="$fill" 'BEGIN {
	s = sprintf("%65536s", "")
	for (i = 0; i < n; i++) { f = dir "/x" i; printf "%s", s > f; close(f) }
}'
rm -f "$fill"/x*[147]
i=0
while [ "$i" -lt "$files" ]; do
	: >"$keep/f$i"
	i=$((i + 1))
done
rm -rf "$fill"
