"""Snapshot collection: page_owner read from a live guest by parallel PFN-range readers, streamed to .zst."""
