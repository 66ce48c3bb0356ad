"""The run pipeline: profiles, workloads, the leak hunt itself, and its artifacts (report, junit, metadata)."""
