"""Training of phone classifiers: deltarnn train, checkpoints, resume, PER, errors."""

import json

import numpy as np
import pytest
import torch

from deltarnn.cli import main
from deltarnn.models import RNNModel, load_torch_model
from deltarnn.quant.qmodel import align_outputs, delay_inputs
from deltarnn.quant.quantizer import quantize
from deltarnn.speech.train import (TrainConfig, forward_padded, frame_accuracy, length_batches, pad_batch, predict,
                                   train_frames)

TINY = ["--dataset", "espeak-tiny", "--hidden", "8", "--layers", "1", "--batch", "8", "--no-progress",
        "--threads", "1"]


@pytest.mark.parametrize("cell", ["lstm", "gru", "ligru", "sru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_forward_padded_equals_one_utterance_at_a_time(cell, bidirectional):
    torch.manual_seed(1)
    m = RNNModel(cell, 5, 6, 2, bidirectional, 4).eval()
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, 5)).astype(np.float32) for n in (4, 11, 7)]
    x, _, lengths = pad_batch(feats)
    with torch.no_grad():
        out = forward_padded(m, x, lengths)
        for i, f in enumerate(feats):
            alone = m(torch.as_tensor(f)[None])[0]
            assert torch.allclose(out[i, :len(f)], alone, atol=1e-5)


def test_pad_batch_and_length_batches():
    x, y, lengths = pad_batch([np.ones((2, 3)), np.ones((4, 3))], [np.array([1, 2]), np.array([3, 4, 5, 6])])
    assert x.shape == (2, 4, 3) and x[0, 2:].abs().sum() == 0
    assert y[0].tolist() == [1, 2, -100, -100] and lengths.tolist() == [2, 4]
    batches = length_batches([5, 1, 3, 9, 2], 2)
    assert [list(b) for b in batches] == [[1, 4], [2, 0], [3]]
    shuffled = length_batches([5, 1, 3, 9, 2], 2, np.random.default_rng(0))
    assert sorted(int(i) for b in shuffled for i in b) == [0, 1, 2, 3, 4]


def test_output_delay_pads_inputs_and_shifts_labels():
    x, y, lengths = pad_batch([np.ones((2, 3)), np.ones((4, 3))], [np.array([1, 2]), np.array([3, 4, 5, 6])], delay=2)
    assert x.shape == (2, 6, 3) and lengths.tolist() == [4, 6]
    assert x[0, 2:].abs().sum() == 0 and x[1, 4:].abs().sum() == 0
    assert y[0].tolist() == [-100, -100, 1, 2, -100, -100] and y[1].tolist() == [-100, -100, 3, 4, 5, 6]
    torch.manual_seed(2)
    m = RNNModel("gru", 3, 5, 1, num_classes=4, output_delay=2).eval()
    feats = [np.random.default_rng(1).normal(size=(n, 3)).astype(np.float32) for n in (5, 8)]
    out = predict(m, feats)
    for f, o in zip(feats, out):
        with torch.no_grad():
            full = m(torch.as_tensor(delay_inputs(f, 2))[None])[0].numpy()
        assert o.shape == (len(f), 4)
        np.testing.assert_allclose(o, align_outputs(full, 2), atol=1e-5)
    qm = quantize(m, np.stack([feats[1]]), 4, 8)
    assert qm.meta["output_delay"] == 2


def test_cosine_schedule():
    cfg = TrainConfig(epochs=5, lr=1e-2, final_lr=0.1)
    lrs = [cfg.lr_at(e) for e in range(5)]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_train_frames_still_works():
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(8, 10, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int64)
    m = RNNModel("gru", 3, 8, 1, num_classes=2)
    losses = train_frames(m, x, y, epochs=3, lr=1e-2, batch=4)
    assert len(losses) == 3 and losses[-1] < losses[0]
    with torch.no_grad():
        assert 0.0 <= frame_accuracy(m(torch.as_tensor(x)).numpy(), y) <= 1.0


def test_train_checkpoint_resume_and_quantize(tmp_path, capsys):
    out = tmp_path / "gru.pt"
    assert main(["train", "--cell", "gru", *TINY, "--epochs", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dev FER" in text and "undecoded PER" in text and "epoch 1/1" in text
    assert out.exists() and (tmp_path / "gru.pt.ckpt").exists()
    hist = json.loads((tmp_path / "gru.pt.json").read_text())
    assert len(hist["history"]) == 1 and 0 <= hist["history"][0]["dev_per"] and 0 <= hist["history"][0]["dev_fer"]

    assert main(["train", "--cell", "gru", *TINY, "--epochs", "2", "--resume", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "resuming" in text and "epoch 2/2" in text and "epoch 1/2" not in text
    hist = json.loads((tmp_path / "gru.pt.json").read_text())
    assert [h["epoch"] for h in hist["history"]] == [1, 2]
    best = min(h["dev_fer"] for h in hist["history"])
    assert hist["best_dev_fer"] == pytest.approx(best)

    model = load_torch_model(out)  # the best-dev-FER model, as deltarnn quantize reads it
    assert isinstance(model, RNNModel) and model.num_classes == 39 and model.input_size == 40
    assert model.output_delay == 3
    assert main(["quantize", str(out), "-o", str(tmp_path / "gru.qmodel")]) == 0


def test_resume_is_deterministic(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["train", "--cell", "sru", *TINY, "--epochs", "2", "-o", str(a)]) == 0
    assert main(["train", "--cell", "sru", *TINY, "--epochs", "1", "-o", str(b)]) == 0
    assert main(["train", "--cell", "sru", *TINY, "--epochs", "2", "--resume", "-o", str(b)]) == 0
    ha = json.loads((tmp_path / "a.pt.json").read_text())["history"]
    hb = json.loads((tmp_path / "b.pt.json").read_text())["history"]
    assert [h["dev_fer"] for h in ha] == pytest.approx([h["dev_fer"] for h in hb])
    assert [h["dev_per"] for h in ha] == pytest.approx([h["dev_per"] for h in hb])


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deltarnn: error:")
    return err[0]


def test_clear_errors(tmp_path, capsys):
    msg = _error(capsys, ["train", "--cell", "gru", "--dataset", "nosuch", "-o", str(tmp_path / "m.pt")])
    assert "unknown dataset 'nosuch'" in msg and "espeak" in msg
    msg = _error(capsys, ["train", "--cell", "gru", *TINY, "-o", str(tmp_path / "missing" / "m.pt")])
    assert "does not exist" in msg
    msg = _error(capsys, ["train", "--cell", "gru", *TINY, "--resume", "-o", str(tmp_path / "m.pt")])
    assert "no checkpoint" in msg
    msg = _error(capsys, ["train", "--cell", "gru", "--dataset", "timit", "-o", str(tmp_path / "m.pt")])
    assert "timit" in msg.lower()


def test_resume_with_other_architecture_is_refused(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", "--cell", "gru", *TINY, "--epochs", "1", "-o", str(out)]) == 0
    capsys.readouterr()
    other = [("12" if a == "8" and TINY[i - 1] == "--hidden" else a) for i, a in enumerate(TINY)]
    msg = _error(capsys, ["train", "--cell", "gru", *other, "--epochs", "2", "--resume", "-o", str(out)])
    assert "other options" in msg and "hidden" in msg


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--hidden", "-3"], ["--lr", "0"], ["--lr", "abc"],
                                 ["--cell", "rnn"]])
def test_bad_options_are_usage_errors(tmp_path, capsys, bad):
    argv = ["train", "--cell", "gru", "--dataset", "espeak-tiny", "-o", str(tmp_path / "m.pt")]
    if bad[0] == "--cell":
        argv[2] = bad[1]
    else:
        argv += bad
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "error" in capsys.readouterr().err
