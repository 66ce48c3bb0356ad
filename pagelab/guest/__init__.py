"""The guest: the initramfs (image.py), keys (keys.py), the QEMU command line and accelerator (qemu.py),
lifecycle and QMP (machine.py), the serial console watcher (console.py), SSH (ssh.py), the Guest API
(session.py) and ``pagelab boot`` (boot.py)."""

from pagelab.guest.session import BootTimeout, Guest, GuestOptions
from pagelab.guest.ssh import CommandResult, CommandTimeout, HostKeyMismatch

__all__ = ["BootTimeout", "CommandResult", "CommandTimeout", "Guest", "GuestOptions", "HostKeyMismatch"]
