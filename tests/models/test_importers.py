"""Models from the field's libraries: SpeechBrain's LiGRU and sru's SRU (docs/models.md).

Each is converted from a ``torch.save``-d file loaded without its package, and
must give the library's own forward pass in float (``FLOAT_EXACT``) and, at 16
bits, track it as closely as the project's own models do (``FLOAT_BOUND`` of
tests/quant/test_golden.py). The libraries' modules are the stand-ins of
``tests/models/foreign.py`` (SpeechBrain does not import beside this torch),
and sru's own package where it imports (``pip install sru``, in the dev extras).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deltarnn.models import RNNModel, UnsupportedModelError, from_torch, load_torch_model
from deltarnn.quant.golden import emulate
from deltarnn.quant.quantizer import quantize

from tests.helpers import float_outputs, random_input
from tests.models import foreign
from tests.quant.test_golden import FLOAT_BOUND

#: Largest |deltarnn float - library| allowed: float32 rounding of the same arithmetic, in
#: another order (measured at most 5e-7 on these models).
FLOAT_EXACT = 1e-5


def _save_and_load(module: nn.Module, tmp_path, stand_in: bool) -> RNNModel:
    """``torch.save`` ``module`` and load it with the packages *not* importable under their names."""
    path = tmp_path / "model.pt"
    if stand_in:
        with foreign.foreign_modules():
            torch.save(module, path)
    else:
        torch.save(module, path)
    hidden = {n: sys.modules.pop(n) for n in list(sys.modules) if n.split(".")[0] in ("speechbrain", "sru")}
    try:
        model = load_torch_model(path)
    finally:
        sys.modules.update(hidden)
    assert isinstance(model, RNNModel) and not model.training
    return model


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial biases and batch-norm statistics (the libraries initialise them to 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name.endswith("norm.weight"):
                p.copy_(torch.empty_like(p).uniform_(-0.5, 0.5, generator=g) + (1.0 if "weight" in name else 0.0))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.3, 0.3, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return module.eval()


def _tracks(model: RNNModel, x: np.ndarray) -> bool:
    """16-bit golden model against float, within the project's bound.

    ``FLOAT_BOUND`` was measured on models whose outputs stay within about 1 (a
    linear head); these libraries' models have no head and their h reaches about
    5 (sru's rescaled highway), and the fixed-point error grows with it (halving
    x halves it): the bound applies to outputs scaled to a peak of 1.
    """
    qm = quantize(model, x, 16, 16)
    want = float_outputs(model, x)
    err = float(np.abs(emulate(qm, x).outputs - want).max())
    return err < FLOAT_BOUND * max(1.0, float(np.abs(want).max()))


# --- SpeechBrain's LiGRU ----------------------------------------------------------------------


def _ligru(bidirectional: bool, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise(foreign.LiGRU(6, (2, 9, 5), num_layers=2, bidirectional=bidirectional, **kw), seed)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_speechbrain_ligru_imports_exactly_and_quantizes(bidirectional, tmp_path):
    sb = _ligru(bidirectional)
    x = random_input(3, 20, 5, seed=1)
    with torch.no_grad():
        want = sb(torch.as_tensor(x))[0].numpy()
    model = _save_and_load(sb, tmp_path, stand_in=True)
    assert (model.cell, model.num_layers, model.bidirectional, model.hidden_size) == ("ligru", 2, bidirectional, 6)
    err = np.abs(float_outputs(model, x) - want).max()
    assert err < FLOAT_EXACT, err
    assert np.abs(float_outputs(from_torch(sb), x) - want).max() < FLOAT_EXACT
    assert _tracks(model, random_input(4, 40, 5, seed=2))


def test_speechbrain_ligru_without_bias():
    sb = _ligru(False, bias=False)
    x = random_input(2, 8, 5, seed=3)
    with torch.no_grad():
        want = sb(torch.as_tensor(x))[0].numpy()
    assert np.abs(float_outputs(from_torch(sb), x) - want).max() < FLOAT_EXACT


def test_speechbrain_ligru_options_are_refused_in_one_error(tmp_path):
    sb = _ligru(False, normalization="layernorm", nonlinearity="tanh")
    with pytest.raises(UnsupportedModelError) as e:
        _save_and_load(sb, tmp_path, stand_in=True)
    msg = str(e.value)
    assert msg.startswith("speechbrain.nnet.RNN.LiGRU uses what deltarnn does not support")
    assert "normalization='layernorm'" in msg and "nonlinearity='tanh'" in msg
    assert msg.count("normalization=") == 1  # once, though both layers have it
    sb = _ligru(False, nonlinearity="sin")
    with torch.no_grad():
        sb.rnn[1].h_init.fill_(0.5)
    with pytest.raises(UnsupportedModelError, match=r"nonlinearity='sin'.*non-zero initial state h_init"):
        from_torch(sb)
    with pytest.raises(UnsupportedModelError, match=r"normalization='none' \(LayerNorm"):
        from_torch(_ligru(False, normalization="none"))


class _Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = foreign.LiGRU(6, (2, 9, 5), num_layers=1, bidirectional=True)
        self.out = nn.Linear(12, 4)

    def forward(self, x):
        return self.out(self.rnn(x)[0])


def test_speechbrain_ligru_in_a_container_with_a_head(tmp_path):
    torch.manual_seed(4)
    tagger = _randomise(_Tagger(), 4)
    x = random_input(2, 10, 5, seed=5)
    with torch.no_grad():
        want = tagger(torch.as_tensor(x)).numpy()
    path = tmp_path / "tagger.pt"
    with foreign.foreign_modules():
        torch.save(tagger, path)
    model = load_torch_model(path)
    assert model.num_classes == 4
    assert np.abs(float_outputs(model, x) - want).max() < FLOAT_EXACT


# --- sru's SRU ------------------------------------------------------------------------------

#: (input size, hidden size, bidirectional, rescale): equal and unequal sizes (sru's k = 3 and 4
#: weight blocks: a bidirectional layer's output is 2 x hidden), rescale on and off.
SRU_CASES = [(n_in, 6, bi, rescale) for n_in in (6, 5) for bi in (False, True) for rescale in (True, False)]
SRU_CASES.append((12, 6, True, True))  # k = 3 in a bidirectional first layer: each direction's slice of x


def _sru_ids(case):
    n_in, hs, bi, rescale = case
    return f"{n_in}-{hs}{'-bi' if bi else ''}{'-rescale' if rescale else ''}"


def _real_sru():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its CUDA kernels do not build here
            import sru
    except Exception as e:  # noqa: BLE001 - not installed, or its C++ extension does not build
        pytest.skip(f"the sru package does not import: {type(e).__name__}: {e}")
    return sru


def _sru(cls, case, seed, **kw) -> nn.Module:
    n_in, hs, bi, rescale = case
    torch.manual_seed(seed)
    return _randomise(cls(n_in, hs, num_layers=2, bidirectional=bi, rescale=rescale, highway_bias=-0.5, **kw), seed)


def _check_sru(m: nn.Module, case, tmp_path, stand_in: bool) -> RNNModel:
    n_in = case[0]
    x = random_input(3, 15, n_in, seed=6)
    xt = torch.as_tensor(x.transpose(1, 0, 2))  # sru is time-major
    with torch.no_grad():
        want = m(xt)[0].numpy().transpose(1, 0, 2)
    model = _save_and_load(m, tmp_path, stand_in)
    assert (model.cell, model.num_layers, model.bidirectional) == ("sru", 2, case[2])
    err = np.abs(float_outputs(model, x) - want).max()
    assert err < FLOAT_EXACT, err
    if not stand_in:  # sru's pure-Python recurrence (it runs with gradients on) too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = m(xt)[0].detach().numpy().transpose(1, 0, 2)
        assert np.abs(float_outputs(model, x) - slow).max() < FLOAT_EXACT
    return model


@pytest.mark.parametrize("case", SRU_CASES, ids=_sru_ids)
def test_sru_stand_in_imports_exactly(case, tmp_path):
    _check_sru(_sru(foreign.SRU, case, 7), case, tmp_path, stand_in=True)


@pytest.mark.parametrize("case", SRU_CASES, ids=_sru_ids)
def test_real_sru_imports_exactly(case, tmp_path):
    sru = _real_sru()
    _check_sru(_sru(sru.SRU, case, 8), case, tmp_path, stand_in=False)


@pytest.mark.parametrize("case", SRU_CASES, ids=_sru_ids)
def test_sru_quantized_tracks_float(case):
    model = from_torch(_sru(foreign.SRU, case, 8))
    assert _tracks(model, random_input(4, 40, case[0], seed=10))


def test_sru_highway_forms():
    """Plain x stays deltarnn's identity highway; a scaled, sliced, projected or absent one is a projection."""
    projected = lambda case, **kw: [d.projected for layer in from_torch(_sru(foreign.SRU, case, 1, **kw)).layers
                                    for d in layer.directions]
    assert projected((6, 6, False, False)) == [False, False]
    assert projected((6, 6, False, True)) == [True, True]  # h = r*c + (1-r) * scale_x * x
    assert projected((6, 6, True, False)) == [True] * 4    # sru's k = 4 first layer
    m = _sru(foreign.SRU, (5, 6, False, True), 2, has_skip_term=False)  # h = r*c: a zero projection
    x = random_input(2, 7, 5, seed=11)
    with torch.no_grad():
        want = m(torch.as_tensor(x.transpose(1, 0, 2)))[0].numpy().transpose(1, 0, 2)
    assert np.abs(float_outputs(from_torch(m), x) - want).max() < FLOAT_EXACT


def test_single_sru_cell():
    torch.manual_seed(3)
    cell = _randomise(foreign.SRUCell(4, 6, bidirectional=True), 3)
    x = random_input(2, 7, 4, seed=12)
    with torch.no_grad():
        want = cell(torch.as_tensor(x.transpose(1, 0, 2)))[0].numpy().transpose(1, 0, 2)
    model = from_torch(cell)
    assert model.num_layers == 1 and model.bidirectional
    assert np.abs(float_outputs(model, x) - want).max() < FLOAT_EXACT


@pytest.mark.parametrize("real", [False, True], ids=["stand-in", "sru"])
def test_sru_options_are_refused_in_one_error(real, tmp_path):
    cls = _real_sru().SRU if real else foreign.SRU
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sru: use_tanh is deprecated
        m = cls(8, 6, num_layers=2, layer_norm=True, projection_size=3, use_tanh=True, custom_m=None)
    with pytest.raises(UnsupportedModelError) as e:
        _save_and_load(m, tmp_path, stand_in=not real)
    msg = str(e.value)
    assert msg.startswith("sru.modules.SRU uses what deltarnn does not support")
    for option in ("projection_size=3", "layer_norm=True", "use_tanh=True"):
        assert msg.count(option) == 1, (option, msg)
    with pytest.raises(UnsupportedModelError, match=r"custom_m=Linear"):
        from_torch(cls(6, 6, num_layers=1, custom_m=nn.Linear(6, 18)))
    with pytest.raises(UnsupportedModelError, match="proj_input_to_hidden_first=True"):
        from_torch(cls(5, 6, num_layers=1, proj_input_to_hidden_first=True))


def test_other_classes_of_those_packages_are_named(tmp_path):
    odd = type("SLiGRU", (nn.Module,), {"__module__": "speechbrain.nnet.RNN"})()
    with pytest.raises(UnsupportedModelError, match=r"speechbrain.nnet.RNN.SLiGRU is not supported: use .*sru.SRU"):
        from_torch(odd)
