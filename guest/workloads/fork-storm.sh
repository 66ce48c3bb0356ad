#!/bin/sh
# summary: start PROCS short-lived processes at once and reap them (task structs, stacks, page tables)
# usage: fork-storm [PROCS=100]
procs=${1:-100}
i=0
while [ "$i" -lt "$procs" ]; do
	sleep 0 &
	i=$((i + 1))
done
wait
