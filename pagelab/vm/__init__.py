"""The guest VM: QEMU command line and accelerator (qemu.py), lifecycle and QMP (machine.py),
serial console watcher (console.py), SSH (ssh.py), keys (keys.py) and the Guest API (guest.py)."""

from pagelab.vm.guest import BootTimeout, Guest, GuestOptions
from pagelab.vm.ssh import CommandResult, CommandTimeout, HostKeyMismatch

__all__ = ["BootTimeout", "CommandResult", "CommandTimeout", "Guest", "GuestOptions", "HostKeyMismatch"]
