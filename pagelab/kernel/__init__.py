"""Kernel stage: sources (source.py), config fragments merged and verified (kconfig.py), cached builds (build.py)."""
