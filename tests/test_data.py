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
