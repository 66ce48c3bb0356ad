#!/bin/sh
# summary: ask the leaky test module to kmalloc OBJECTS 1 KiB objects and never free them (a slab leak)
# usage: leaky-slab [OBJECTS=2048]
# requires: module leaky
# Its slab pages must be a `leak` at leaky_slab_leak (2048 objects of kmalloc-1k: 512 pages a call).
set -e
objects=${1:-2048}
echo "$objects" >/sys/kernel/debug/leaky/slab
