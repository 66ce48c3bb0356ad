#!/bin/sh
# summary: ask the leaky test module to allocate PAGES order-0 pages and never free them
# usage: leaky-leak [PAGES=256]
# requires: module leaky
# The truth test: its stack (leaky_leak and leak_write [leaky]) must be the top suspect, growing PAGES per call.
set -e
pages=${1:-256}
echo "$pages" >/sys/kernel/debug/leaky/leak
