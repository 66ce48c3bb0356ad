"""SSH keys generated once per cache: pagelab's client key and the guest's (pinned) host key.

The guest runs dropbear, which wants its host key in dropbear's own format: ``dropbearkey``
generates it and prints the public half, which paramiko pins. The client key is an OpenSSH
ed25519 key made with ``cryptography`` (paramiko's own dependency). Every private key is 0600.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko.pkey import UnknownKeyType

from pagelab.cache import atomic_write, file_lock, private_dir
from pagelab.errors import InfraError
from pagelab.procs import step_failed

HOST_KEY_NAME = "dropbear_ed25519_host_key"
CLIENT_KEY_NAME = "client_ed25519"


@dataclass(frozen=True)
class Keys:
    """Paths and public halves of pagelab's key pair set."""

    directory: Path
    client_key: Path  # OpenSSH private key, 0600
    client_public: str  # "ssh-ed25519 AAAA… pagelab" (the guest's authorized_keys line)
    host_key: Path  # dropbear-format private key, 0600 (goes into the image)
    host_public: str  # "ssh-ed25519 AAAA…" (pinned by the client)

    def load_client_key(self) -> paramiko.PKey:
        """The client key as a paramiko key object."""
        return paramiko.Ed25519Key.from_private_key_file(str(self.client_key))

    def pinned_host_key(self) -> paramiko.PKey:
        """The guest host key paramiko must see, and nothing else."""
        return public_key_from_line(self.host_public)


def public_key_from_line(line: str) -> paramiko.PKey:
    """Parse an OpenSSH public key line (``type base64 [comment]``) into a paramiko key.

    Raises InfraError if the line is not a public key.
    """
    parts = line.split()
    if len(parts) < 2:
        raise InfraError(f"not an OpenSSH public key line: {line!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
        return paramiko.PKey.from_type_string(parts[0], blob)
    except (ValueError, paramiko.SSHException, UnknownKeyType) as err:
        raise InfraError(f"not an OpenSSH public key line: {line!r} ({err})") from None


def ensure_keys(directory: Path | None = None) -> Keys:
    """The cached keys, generated on first use (under a lock, so concurrent runs agree).

    Raises InfraError if dropbearkey is missing or fails.
    """
    directory = directory or private_dir("keys")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    client = directory / CLIENT_KEY_NAME
    host = directory / HOST_KEY_NAME
    with file_lock(directory / ".lock"):
        if not client.exists():
            _generate_client_key(client)
        if not host.exists():
            _generate_host_key(host)
        host_pub = directory / f"{HOST_KEY_NAME}.pub"
        if not host_pub.exists():
            atomic_write(host_pub, _dropbear_public(host) + "\n")
        for private in (client, host):
            if private.stat().st_mode & 0o077:  # loosened by a copy or a restore: private again
                os.chmod(private, 0o600)
    client_pub = (directory / f"{CLIENT_KEY_NAME}.pub").read_text().strip()
    return Keys(directory, client, client_pub, host, host_pub.read_text().strip())


def _generate_client_key(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    atomic_write(path.with_name(path.name + ".pub"), public + b" pagelab\n")
    atomic_write(path, private, mode=0o600)


def _generate_host_key(path: Path) -> None:
    tool = shutil.which("dropbearkey")
    if tool is None:
        raise InfraError("dropbearkey not found: install dropbear-bin (scripts/setup-host.sh)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    proc = subprocess.run([tool, "-t", "ed25519", "-f", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise step_failed("dropbearkey", proc.returncode, output=proc.stderr or proc.stdout)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _dropbear_public(path: Path) -> str:
    tool = shutil.which("dropbearkey")
    if tool is None:
        raise InfraError("dropbearkey not found: install dropbear-bin (scripts/setup-host.sh)")
    proc = subprocess.run([tool, "-y", "-f", str(path)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("ssh-"):
            return " ".join(line.split()[:2])
    raise InfraError(f"dropbearkey -y -f {path}: no public key in its output ({proc.stderr.strip()})")
