"""SSH pieces that need no guest: keys, public-key parsing, the direct stream's token check."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

import pytest

from pagelab.errors import InfraError
from pagelab.guest.keys import ensure_keys, public_key_from_line
from pagelab.guest.ssh import SSHSession


def test_keys_are_generated_once_with_private_modes(tmp_path: Path) -> None:
    keys = ensure_keys(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(keys.client_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys.host_key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys.directory).st_mode) == 0o700
    again = ensure_keys(tmp_path / "keys")
    assert again == keys
    assert keys.host_public.startswith("ssh-ed25519 ") and keys.client_public.endswith(" pagelab")


def test_pinned_host_key_is_the_public_half_of_the_dropbear_key(tmp_path: Path) -> None:
    keys = ensure_keys(tmp_path / "keys")
    pinned = keys.pinned_host_key()
    assert pinned.get_name() == "ssh-ed25519"
    assert pinned.get_base64() == keys.host_public.split()[1]
    assert keys.load_client_key().get_base64() == keys.client_public.split()[1]


def test_two_caches_have_different_host_keys(tmp_path: Path) -> None:
    assert ensure_keys(tmp_path / "a").host_public != ensure_keys(tmp_path / "b").host_public


@pytest.mark.parametrize("line", ["", "ssh-ed25519", "ssh-ed25519 not-base64!!", "ssh-nope AAAA"])
def test_bad_public_key_lines_are_infra_errors(line: str) -> None:
    with pytest.raises(InfraError, match="public key"):
        public_key_from_line(line)


def test_direct_listener_rejects_a_stranger_and_accepts_the_token_holder() -> None:
    token = b"0123456789abcdef0123456789abcdef"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        addr = listener.getsockname()
        assert SSHSession._accept_guest(listener, token) is None  # nobody yet
        stranger = socket.create_connection(addr)
        stranger.sendall(b"x" * len(token) + b"injected")
        guest = socket.create_connection(addr)
        guest.sendall(token + b"payload")
        conn = None
        for _ in range(100):
            if (conn := SSHSession._accept_guest(listener, token)) is not None:
                break
        assert conn is not None
        conn.setblocking(True)
        assert conn.recv(100) == b"payload"
        stranger.settimeout(2)
        # Closed on it (a reset when its bytes were left unread is a close too).
        with contextlib.suppress(ConnectionResetError):
            assert stranger.recv(10) == b""
        for s in (conn, stranger, guest):
            s.close()


def test_connect_to_a_closed_port_gives_up_with_infra_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = SSHSession(port, ensure_keys(tmp_path / "keys"))
    with pytest.raises(InfraError, match=f"127.0.0.1:{port} failed"):
        session.connect(timeout=1)
