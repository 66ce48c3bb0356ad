#!/bin/sh
# summary: ask the leaky test module to refill a bounded cache: PAGES fresh pages, the previous PAGES freed
# usage: leaky-cache [PAGES=512]
# requires: module leaky
# The count rises once and stays at PAGES, but every batch is new: a `cache`, never a `leak`.
set -e
pages=${1:-512}
echo "$pages" >/sys/kernel/debug/leaky/cache
