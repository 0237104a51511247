"""The kernel cache directory follows the package's sources (see _numba_setup._source_tag)."""

from localllm import _numba_setup


def test_tag_changes_with_any_source_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    tag = _numba_setup._source_tag(tmp_path)
    assert tag == _numba_setup._source_tag(tmp_path)  # stable for the same sources
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")  # an edit to a callee's file only
    edited = _numba_setup._source_tag(tmp_path)
    assert edited != tag
    (tmp_path / "sub" / "c.py").write_text("")  # a new module
    assert _numba_setup._source_tag(tmp_path) != edited


def test_cache_dir_is_tagged_and_stale_ones_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path))
    stale = tmp_path / "numba" / "0123456789ab"
    stale.mkdir(parents=True)
    (stale / "kernel.nbi").write_bytes(b"old")
    from localllm.isa import KERNEL_PATH

    tag = _numba_setup._source_tag()
    other_path = tmp_path / "numba" / f"{tag}-portable-other"  # same sources, another kernel path
    other_path.mkdir()
    path = _numba_setup._cache_dir()
    assert path == tmp_path / "numba" / f"{tag}-{KERNEL_PATH}"
    assert not stale.exists()
    assert other_path.exists()  # kept: switching LOCALLLM_KERNELS back and forth needs no recompile
