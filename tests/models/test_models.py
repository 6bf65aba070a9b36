"""Accepting user models: PyTorch modules, containers, unsupported options."""

import numpy as np
import pytest
import torch
from torch import nn

from deltarnn.models import RNNModel, UnsupportedModelError, from_torch, load_torch_model

from tests.helpers import float_outputs, random_input


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("batch_first", [True, False])
def test_plain_torch_rnn_is_converted_exactly(cls, batch_first):
    torch.manual_seed(0)
    rnn = cls(5, 7, num_layers=2, bidirectional=True, batch_first=batch_first).eval()
    x = random_input(3, 11, 5)
    xt = torch.as_tensor(x if batch_first else x.transpose(1, 0, 2))
    with torch.no_grad():
        want = rnn(xt)[0].numpy()
    if not batch_first:
        want = want.transpose(1, 0, 2)
    got = float_outputs(from_torch(rnn), x)
    np.testing.assert_allclose(got, want, atol=1e-6)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


def test_container_with_head():
    torch.manual_seed(1)
    t = Tagger().eval()
    x = random_input(2, 9, 4)
    m = from_torch(t)
    assert m.num_classes == 3 and m.cell == "gru"
    np.testing.assert_allclose(float_outputs(m, x), float_outputs(t, x), atol=1e-6)


def test_unsupported_options_are_named(tmp_path):
    with pytest.raises(UnsupportedModelError, match="proj_size=3"):
        from_torch(nn.LSTM(4, 6, proj_size=3))
    with pytest.raises(UnsupportedModelError, match="RNN is not supported"):
        from_torch(nn.RNN(4, 6))
    with pytest.raises(UnsupportedModelError, match="state_dict"):
        from_torch(nn.GRU(4, 6).state_dict())
    two = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4))
    two.rnn = nn.GRU(4, 4)
    with pytest.raises(UnsupportedModelError, match="2 nn.Linear layers"):
        from_torch(two)
    extra = Tagger()
    extra.norm = nn.LayerNorm(6)
    with pytest.raises(UnsupportedModelError, match="parameters outside.*norm.weight"):
        from_torch(extra)
    with pytest.raises(UnsupportedModelError, match="unknown cell type 'rnn'"):
        RNNModel("rnn", 3, 3)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    with pytest.raises(UnsupportedModelError, match="not a PyTorch model file"):
        load_torch_model(bad)
    with pytest.raises(UnsupportedModelError, match="no such file"):
        load_torch_model(tmp_path / "missing.pt")


def test_saved_project_model_loads(tmp_path):
    m = RNNModel("sru", 4, 5, 2, True, 3)
    torch.save(m, tmp_path / "m.pt")
    back = load_torch_model(tmp_path / "m.pt")
    x = random_input(1, 6, 4)
    np.testing.assert_array_equal(float_outputs(back, x), float_outputs(m.eval(), x))


def test_models_saved_before_the_rename_still_load(tmp_path, monkeypatch):
    """A file pickled when the package was ``sw`` (classes ``sw.models.*``) loads as deltarnn.models."""
    import sys

    import deltarnn.models as M

    m = RNNModel("ligru", 3, 4, 1, False, 2).eval()
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "sw.models", M)
        for cls in (M.RNNModel, M.BiLayer, M.LiGRUDirection):
            mp.setattr(cls, "__module__", "sw.models")
        torch.save(m, tmp_path / "old.pt")
    assert b"sw.models" in (tmp_path / "old.pt").read_bytes()
    assert "sw.models" not in sys.modules
    back = load_torch_model(tmp_path / "old.pt")
    x = torch.randn(1, 5, 3)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))
