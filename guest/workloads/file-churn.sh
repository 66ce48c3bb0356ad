#!/bin/sh
# summary: create FILES small files in a tmpfs directory and remove them (dentry and inode slabs)
# usage: file-churn [FILES=2000]
set -e
files=${1:-2000}
dir=/run/pagelab/tmpfs
mkdir -p "$dir"
grep -q " $dir tmpfs " /proc/mounts || mount -t tmpfs -o size=90% pagelab "$dir"
mkdir -p "$dir/files"
i=0
while [ "$i" -lt "$files" ]; do
	: >"$dir/files/f$i"
	i=$((i + 1))
done
rm -rf "$dir/files"
