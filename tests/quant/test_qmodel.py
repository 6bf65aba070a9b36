"""The QModel file: round trip, and refusal of damaged, foreign and newer files."""

import json
import zipfile

import numpy as np
import pytest

from deltarnn.quant.golden import emulate
from deltarnn.quant.qmodel import FORMAT_VERSION, QModel, QModelFormatError
from deltarnn.quant.quantizer import quantize

from tests.helpers import random_input, random_model


@pytest.fixture
def saved(tmp_path):
    m = random_model("lstm", 5, 6, 2, True, classes=3)
    x = random_input(2, 15, 5)
    qm = quantize(m, x, 3, 7, skip=["1.h"])
    qm.set_thresholds(2, 1)
    path = tmp_path / "m.qmodel"
    qm.save(path)
    return qm, path, x


def test_round_trip_is_exact(saved):
    qm, path, x = saved
    back = QModel.load(path)
    assert back.paths()["0.x"].theta == 2 and back.paths()["1.h"].theta == 1
    assert back.layers[1].h_act.bits == 16 and back.layers[1].directions[1].h.wbits == 16
    np.testing.assert_array_equal(emulate(back, x).outputs_fx, emulate(qm, x).outputs_fx)
    assert back.storage_bits() == qm.storage_bits()


def test_foreign_files_are_refused(tmp_path):
    junk = tmp_path / "junk.qmodel"
    junk.write_bytes(b"hello, this is not a model")
    with pytest.raises(QModelFormatError, match="not a deltarnn QModel file"):
        QModel.load(junk)
    other_zip = tmp_path / "other.qmodel"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(QModelFormatError, match="no header.json"):
        QModel.load(other_zip)
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(QModelFormatError, match="not a deltarnn QModel"):
        QModel.load(npy)
    with pytest.raises(QModelFormatError, match="no such file"):
        QModel.load(tmp_path / "missing.qmodel")


def _rewrite_header(path, change):
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    header = json.loads(files["header.json"])
    change(header)
    files["header.json"] = json.dumps(header).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)


def test_newer_version_and_wrong_magic_are_refused(saved):
    _, path, _ = saved
    _rewrite_header(path, lambda h: h.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(QModelFormatError, match="newer than this deltarnn reads.*upgrade"):
        QModel.load(path)
    _rewrite_header(path, lambda h: h.update(format_version=FORMAT_VERSION, magic="something-else"))
    with pytest.raises(QModelFormatError, match="wrong magic"):
        QModel.load(path)


def test_damaged_files_are_refused(saved):
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    for offset in (len(data) // 3, len(data) // 2):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(QModelFormatError):
            QModel.load(path)
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(QModelFormatError):
        QModel.load(path)


def test_inconsistent_contents_are_refused(saved):
    _, path, _ = saved
    _rewrite_header(path, lambda h: h.update(hidden_size=7))
    with pytest.raises(QModelFormatError, match="inconsistent"):
        QModel.load(path)
