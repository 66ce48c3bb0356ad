"""The cache root is private: it holds SSH keys and images that embed the pinned host key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pagelab.cache import cache_root, content_key


def test_cache_root_is_created_private_and_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = cache_root()
    assert root == tmp_path / "pagelab" and (root.stat().st_mode & 0o777) == 0o700
    os.chmod(root, 0o755)
    assert (cache_root().stat().st_mode & 0o777) == 0o700


def test_content_keys_are_unambiguous() -> None:
    assert content_key(["ab", "c"]) != content_key(["a", "bc"])
    assert content_key(["a", "b"]) == content_key([b"a", b"b"])
