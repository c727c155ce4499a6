"""The embedded corpus and the byte-level split."""

import pytest
import torch

from modman.experiments.common.data import SHAKESPEARE_SHA256, DataError, load_text_bytes, sha256, split_tokens


def test_embedded_corpus_is_the_documented_text():
    data = load_text_bytes()
    assert len(data) == 5_057_198 and sha256(data) == SHAKESPEARE_SHA256


def test_split_is_deterministic_last_tenth_is_validation():
    data = bytes(range(256)) * 40
    train, val = split_tokens(data)
    assert len(val) == len(data) // 10 and len(train) + len(val) == len(data)
    assert torch.equal(torch.cat([train, val]), torch.tensor(list(data)))
    assert torch.equal(split_tokens(data)[1], val)


def test_user_file_round_trip(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("héllo wörld\n", encoding="utf-8")
    assert load_text_bytes(p) == "héllo wörld\n".encode()


def test_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="not a file"):
        load_text_bytes(tmp_path)


def test_the_python_stdlib_corpus_is_sorted_utf8_without_site_packages(tmp_path):
    from modman.experiments.common.data import DataError, python_stdlib_text

    (tmp_path / "b").mkdir()
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "b" / "z.py").write_text("z = 1")
    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "site-packages" / "c.py").write_text("third_party = 1\n")
    (tmp_path / "latin.py").write_bytes("# -*- coding: latin-1 -*-\nx = 'é'\n".encode("latin-1"))
    text, info = python_stdlib_text(tmp_path)
    assert text == b"a = 1\nz = 1\n"  # a.py, b/z.py (newline added); latin.py skipped; site-packages left out
    assert info["files"] == 2 and info["skipped"] == ["latin.py"]
    with pytest.raises(DataError, match="no UTF-8 .py files"):
        python_stdlib_text(tmp_path / "site-packages" / "nothing")


def test_modman_corpus_writes_the_file_and_names_the_python(tmp_path, capsys, monkeypatch):
    import modman.experiments.common.data as data
    from modman.cli import main

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "os.py").write_text("import sys\n")
    real = data.python_stdlib_text
    monkeypatch.setattr(data, "python_stdlib_text", lambda root=None: real(tmp_path / "lib"))
    assert main(["corpus", "python-stdlib", "--out", str(tmp_path / "out" / "stdlib.txt")]) == 0
    assert (tmp_path / "out" / "stdlib.txt").read_bytes() == b"import sys\n"
    out = capsys.readouterr().out
    assert "1 files of Python 3." in out and "sha256 " in out
