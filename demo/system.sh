#!/bin/sh
# The demo system's driver: starts the services, sends the requests, waits.
#
#   system.sh NS_A NS_B ADDR_B PORT SOCKET PYTHON NODE FILTER...
#
# NS_A and NS_B are network namespaces ("" for this one: the loopback fallback).
#   store.js     (Node, in A)   answers GET lines over the UNIX socket SOCKET
#   collector.js (Node, in B)   accepts one TCP connection on ADDR_B:PORT, prints the report
#   api.py       (Python, in A) reads requests from its stdin (a pipe from this script),
#                               asks the store, pipes the answers through FILTER, sends
#                               the result over TCP to the collector
set -eu
here=${0%/*}
ns_a=$1 ns_b=$2 addr_b=$3 port=$4 sock=$5 python=$6 node=$7
shift 7

# Runs a command in a namespace, or here if none was made.
in_ns() {
	ns=$1
	shift
	if [ -n "$ns" ]; then exec ip netns exec "$ns" "$@"; else exec "$@"; fi
}

(in_ns "$ns_b" "$node" "$here/collector.js" "$addr_b" "$port") &
collector=$!
(in_ns "$ns_a" "$node" "$here/store.js" "$sock") &
store=$!

printf 'GET /basket/alice\nGET /basket/bob\nGET /basket/carol\n' |
	(in_ns "$ns_a" "$python" "$here/api.py" "$sock" "$addr_b" "$port" "$@")

status=0
wait "$store" || status=$?
wait "$collector" || status=$?
exit "$status"
