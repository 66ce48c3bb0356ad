"""pagelab: which code owns the kernel's memory, and what keeps growing."""

__version__ = "0.1.0"
