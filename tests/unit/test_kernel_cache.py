"""The compiled-kernel cache is keyed by the whole package's source (flipguard.kernel_cache)."""

import os

from flipguard import kernel_cache


def test_any_source_change_gives_a_new_key(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    key = kernel_cache.source_key(tmp_path)
    assert kernel_cache.source_key(tmp_path) == key
    (tmp_path / "sub" / "b.py").write_text("y = 3  # a helper another module inlines\n")
    assert kernel_cache.source_key(tmp_path) != key


def test_the_package_cache_is_keyed_and_a_users_choice_is_kept(tmp_path, monkeypatch):
    import numba.core.config

    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)  # restored after
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernel_cache.use_keyed_cache()
    chosen = os.environ["NUMBA_CACHE_DIR"]
    assert chosen.startswith(str(tmp_path / "flipguard" / "numba")) and os.path.isdir(chosen)
    assert numba.core.config.CACHE_DIR == chosen  # numba, imported already, follows
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    kernel_cache.use_keyed_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")
