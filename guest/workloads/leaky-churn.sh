#!/bin/sh
# summary: ask the leaky test module to allocate PAGES order-0 pages and free them again (the control)
# usage: leaky-churn [PAGES=256]
# requires: module leaky
# Same allocation path and amount as leaky-leak, but nothing stays allocated: it must not be flagged.
set -e
pages=${1:-256}
echo "$pages" >/sys/kernel/debug/leaky/churn
