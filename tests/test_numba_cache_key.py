"""The kernel cache directory follows the package's sources (see _numba_setup._source_tag)."""

from localllm import _numba_setup


def _kernel_tree(root):
    (root / "kernels").mkdir()
    (root / "kernels" / "a.py").write_text("x = 1\n")
    (root / "quant" / "sub").mkdir(parents=True)
    (root / "quant" / "sub" / "b.py").write_text("y = 2\n")
    (root / "models").mkdir()
    (root / "models" / "forward_pass.py").write_text("z = 3\n")
    (root / "isa.py").write_text("")
    (root / "_numba_setup.py").write_text("")


def test_tag_changes_with_any_kernel_source_file(tmp_path):
    _kernel_tree(tmp_path)
    tag = _numba_setup._source_tag(tmp_path)
    assert tag == _numba_setup._source_tag(tmp_path)  # stable for the same sources
    (tmp_path / "quant" / "sub" / "b.py").write_text("y = 3\n")  # an edit to a callee's file only
    edited = _numba_setup._source_tag(tmp_path)
    assert edited != tag
    (tmp_path / "kernels" / "c.py").write_text("")  # a new kernel module
    added = _numba_setup._source_tag(tmp_path)
    assert added != edited
    (tmp_path / "models" / "forward_pass.py").write_text("z = 4\n")
    assert _numba_setup._source_tag(tmp_path) != added


def test_tag_ignores_code_numba_never_compiles(tmp_path):
    _kernel_tree(tmp_path)
    tag = _numba_setup._source_tag(tmp_path)
    (tmp_path / "cli.py").write_text("print('hi')\n")
    (tmp_path / "models" / "llama.py").write_text("w = 1\n")
    assert _numba_setup._source_tag(tmp_path) == tag


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
