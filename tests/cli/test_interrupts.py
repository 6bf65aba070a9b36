"""Ctrl-C in the middle of long work leaves no corrupt cache or file behind, and the command says so in one line."""

import os

import pytest

from deltarnn.cli import main


def test_an_interrupted_corpus_generation_leaves_no_cache(tmp_path, monkeypatch, capsys):
    from deltarnn.speech.datasets.espeak import corpus

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "run_worker", interrupted)
    monkeypatch.setenv("DELTARNN_CACHE", str(tmp_path / "cache"))
    assert main(["study-inputs", "--dataset", "espeak-tiny", "-o", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "deltarnn: interrupted"
    assert list((tmp_path / "cache").iterdir()) == []          # neither a corpus nor a half-written one


def test_an_interrupted_board_build_is_built_again(tmp_path, monkeypatch):
    from deltarnn.sim import board, build_cache
    from deltarnn.spec.memory_map import DeviceParams

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(board.subprocess, "run", interrupted)
    params = DeviceParams("gru", lanes=2, max_input=4, max_hidden=4, max_layers=1, max_classes=2, wmem_bits=4,
                          abits=8, acc_bits=24)
    with pytest.raises(KeyboardInterrupt):
        board.build_board(params, cache_root=tmp_path)
    (bdir,) = (tmp_path / "verilator").glob("board-*")
    assert build_cache.stamp_digest(bdir) is None                # no stamp: the next call builds


def test_an_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    from deltarnn.quant.qmodel import write_atomically

    path = tmp_path / "model.qmodel"
    write_atomically(path, b"old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, b"new and longer")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.qmodel"]
