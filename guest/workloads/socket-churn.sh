#!/bin/sh
# summary: open CONNS loopback TCP connections one after another, each carrying 256 KiB
# usage: socket-churn [CONNS=20]
# Socket buffers and skb pages are allocated and freed per connection.
conns=${1:-20}
port=7391
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null || true
i=0
while [ "$i" -lt "$conns" ]; do
	nc -l -p "$port" >/dev/null &
	listener=$!
	# The listener needs a moment to bind; retry the connect instead of sleeping blindly.
	tries=0
	until dd if=/dev/zero bs=64k count=4 2>/dev/null | nc 127.0.0.1 "$port" 2>/dev/null; do
		tries=$((tries + 1))
		[ "$tries" -lt 50 ] || { echo "socket-churn: cannot connect to 127.0.0.1:$port" >&2; kill "$listener"; exit 1; }
		usleep 20000
	done
	wait "$listener"
	i=$((i + 1))
done
