#!/bin/sh
# summary: fill PIPES pipes with 64 KiB each, hold them for a second, then close them all
# usage: pipe-hog [PIPES=32]
# A writer fills each pipe's ring (16 pages) and a reader that never reads keeps it open.
pipes=${1:-32}
i=0
while [ "$i" -lt "$pipes" ]; do
	(dd if=/dev/zero bs=64k count=1 2>/dev/null | sleep 1) &
	i=$((i + 1))
done
wait
