#!/bin/sh
# summary: sync and drop the page cache, dentries and inodes (what --drop-caches does before a snapshot)
# usage: drop-caches
sync
echo 3 >/proc/sys/vm/drop_caches
