"""Float recurrent models: LSTM, GRU, LiGRU and SRU, and their canonical form.

:class:`RNNModel` stacks single-layer recurrent modules (optionally
bidirectional) with an optional per-frame linear head. Inputs are
``(batch, time, features)``. LSTM and GRU layers are ``torch.nn.LSTM`` /
``torch.nn.GRU`` (PyTorch semantics); LiGRU and SRU are defined here after
Ravanelli et al. and Lei et al. ("Light Gated Recurrent Units for Speech Recognition", IEEE TETCI 2018, doi:10.1109/TETCI.2017.2762739; "Simple Recurrent Units for Highly Parallelizable Recurrence", EMNLP 2018, doi:10.18653/v1/D18-1477).

:func:`from_torch` turns what users hand us (an ``RNNModel``, a plain
``nn.LSTM`` / ``nn.GRU``, or a module that holds one of those and at most one
``nn.Linear`` head) into an ``RNNModel``; :func:`canonical` lists the
matrices and vectors of every layer and direction in the order the
quantizer and the golden model use.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
import torch
from torch import nn

from deltarnn.spec.cells import CELLS, H_GATES, X_GATES



class UnsupportedModelError(ValueError):
    """The model uses an option or a layer this tool does not support."""


class LiGRUDirection(nn.Module):
    """One direction of a light GRU layer (no reset gate, ReLU candidate).

    ``a = BN(Wa x) + Ua h``, ``z = sigmoid(BN(Wz x) + Uz h)``,
    ``h' = z * h + (1 - z) * relu(a)``; batch norm acts on the input
    projections only.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.w = nn.Linear(input_size, 2 * hidden_size, bias=False)
        self.bn = nn.BatchNorm1d(2 * hidden_size)
        self.u = nn.Linear(hidden_size, 2 * hidden_size, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(batch, time, input)`` to ``h`` ``(batch, time, hidden)``.

        ``mask`` ``(batch, time)`` marks the real frames of a zero-padded
        batch: batch norm then sees (and, in training, learns from) those only.
        """
        b, t, _ = x.shape
        proj = self.w(x)
        if mask is None or bool(mask.all()):
            wx = self.bn(proj.reshape(b * t, -1)).reshape(b, t, -1)
        else:
            wx = proj.new_zeros(proj.shape)
            wx[mask] = self.bn(proj[mask])
        h = x.new_zeros(b, self.hidden_size)
        out = []
        for wxt in wx.unbind(1):
            a, z = (wxt + self.u(h)).chunk(2, dim=-1)
            z = torch.sigmoid(z)
            h = z * h + (1 - z) * torch.relu(a)
            out.append(h)
        return torch.stack(out, dim=1)


class SRUDirection(nn.Module):
    """One direction of a simple recurrent unit layer.

    ``[x~, fx, rx, (p)] = W x``; ``f = sigmoid(fx + vf*c + bf)``,
    ``r = sigmoid(rx + vr*c + br)``, ``c' = f*c + (1-f)*x~``,
    ``h' = r*c' + (1-r)*hw`` with highway ``hw = x`` when input and hidden
    sizes match and ``hw = p`` (a projection of x) otherwise.

    ``projected=True`` gives a direction with equal sizes the projection
    too (``hw = p``): what an imported ``sru.SRU`` needs when its highway is
    not plain ``x`` (see :func:`from_torch`). The default, ``None``, projects
    exactly when the sizes differ.
    """

    def __init__(self, input_size: int, hidden_size: int, projected: bool | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.projected = input_size != hidden_size if projected is None else bool(projected)
        if not self.projected and input_size != hidden_size:
            raise UnsupportedModelError(
                f"an SRU direction with input size {input_size} and hidden size {hidden_size} needs "
                "the highway projection")
        self.w = nn.Linear(input_size, (4 if self.projected else 3) * hidden_size, bias=False)
        self.vf = nn.Parameter(torch.empty(hidden_size).uniform_(-0.5, 0.5))
        self.vr = nn.Parameter(torch.empty(hidden_size).uniform_(-0.5, 0.5))
        self.bf = nn.Parameter(torch.zeros(hidden_size))
        self.br = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(batch, time, input)`` to ``h`` ``(batch, time, hidden)``.

        ``mask`` is accepted for the same call as :class:`LiGRUDirection` and
        unused: nothing in an SRU depends on other frames of the batch.
        """
        b, t, _ = x.shape
        u = self.w(x)
        c = x.new_zeros(b, self.hidden_size)
        xs = x.unbind(1)
        out = []
        for step, ut in enumerate(u.unbind(1)):
            parts = ut.chunk(4 if self.projected else 3, dim=-1)
            xt, fx, rx = parts[:3]
            hw = parts[3] if self.projected else xs[step]
            f = torch.sigmoid(fx + self.vf * c + self.bf)
            r = torch.sigmoid(rx + self.vr * c + self.br)
            c = f * c + (1 - f) * xt
            out.append(r * c + (1 - r) * hw)
        return torch.stack(out, dim=1)


class BiLayer(nn.Module):
    """A layer of one or two :class:`LiGRUDirection` / :class:`SRUDirection`."""

    def __init__(self, direction_cls, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        self.directions = nn.ModuleList(
            direction_cls(input_size, hidden_size) for _ in range(2 if bidirectional else 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.directions[0](x)]
        if len(self.directions) == 2:
            outs.append(self.directions[1](x.flip(1)).flip(1))
        return torch.cat(outs, dim=-1)


class RNNModel(nn.Module):
    """A stack of recurrent layers with an optional per-frame linear head.

    Parameters
    ----------
    cell : {"lstm", "gru", "ligru", "sru"}
    input_size, hidden_size, num_layers : int
    bidirectional : bool
        Each layer runs forwards and backwards in time; outputs concatenate.
    num_classes : int
        Size of the linear head; 0 for none (outputs are the last layer's h).
    output_delay : int
        Frames of lookahead a streaming model was trained with: its output at
        frame ``t + output_delay`` labels input frame ``t``
        (:func:`deltarnn.quant.qmodel.delay_inputs`, :func:`~deltarnn.quant.qmodel.align_outputs`). The network itself is
        unchanged by it; 0 (no delay) for every model not trained with one.
    """

    #: Class default, so that models saved before the attribute existed load with no delay.
    output_delay = 0

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, num_classes: int = 0, output_delay: int = 0):
        super().__init__()
        if cell not in CELLS:
            raise UnsupportedModelError(f"unknown cell type {cell!r}; choose one of {', '.join(CELLS)}")
        for name, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if v < 1:
                raise UnsupportedModelError(f"{name} must be at least 1, got {v}")
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_classes = num_classes
        if output_delay < 0:
            raise UnsupportedModelError(f"output_delay must be >= 0, got {output_delay}")
        self.output_delay = int(output_delay)
        dirs = 2 if bidirectional else 1
        layers = []
        for i in range(num_layers):
            n_in = input_size if i == 0 else dirs * hidden_size
            if cell == "lstm":
                layers.append(nn.LSTM(n_in, hidden_size, batch_first=True, bidirectional=bidirectional))
            elif cell == "gru":
                layers.append(nn.GRU(n_in, hidden_size, batch_first=True, bidirectional=bidirectional))
            else:
                cls = LiGRUDirection if cell == "ligru" else SRUDirection
                layers.append(BiLayer(cls, n_in, hidden_size, bidirectional))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(dirs * hidden_size, num_classes) if num_classes else None

    @property
    def output_size(self) -> int:
        return self.num_classes or (2 if self.bidirectional else 1) * self.hidden_size

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every layer (before the head), each ``(batch, time, dirs*hidden)``."""
        outs = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(x, tuple):
                x = x[0]
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer_outputs(x)[-1]
        return self.head(h) if self.head is not None else h

    def config(self) -> dict:
        return dict(cell=self.cell, input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bidirectional=self.bidirectional,
                    num_classes=self.num_classes, output_delay=self.output_delay)



# --- accepting user models ----------------------------------------------------------


def _check_torch_rnn(rnn: nn.RNNBase) -> None:
    if getattr(rnn, "proj_size", 0):
        raise UnsupportedModelError(
            f"{type(rnn).__name__} with proj_size={rnn.proj_size} is not supported: "
            "retrain without a projection (proj_size=0)")


def _copy_head(model: RNNModel, head: nn.Linear | None) -> None:
    """Copy the per-frame ``head`` (if any) into ``model``'s (built with ``num_classes=head.out_features``)."""
    if head is None:
        return
    if head.in_features != model.head.in_features:
        raise UnsupportedModelError(
            f"the Linear head takes {head.in_features} features but the recurrent layers "
            f"give {model.head.in_features}")
    with torch.no_grad():
        model.head.weight.copy_(head.weight)
        if head.bias is not None:
            model.head.bias.copy_(head.bias)
        else:
            model.head.bias.zero_()


def _from_torch_rnn(rnn: nn.RNNBase, head: nn.Linear | None) -> RNNModel:
    _check_torch_rnn(rnn)
    cell = "lstm" if isinstance(rnn, nn.LSTM) else "gru"
    model = RNNModel(cell, rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bidirectional,
                     head.out_features if head is not None else 0)
    dirs = 2 if rnn.bidirectional else 1
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            for d in range(dirs):
                sfx = f"_l{i}" + ("_reverse" if d else "")
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    dst = getattr(layer, name + ("_l0_reverse" if d else "_l0"))
                    src = getattr(rnn, name + sfx, None)
                    if src is None:  # bias=False
                        dst.zero_()
                    else:
                        dst.copy_(src)
    _copy_head(model, head)
    return model


# --- models from the field's libraries: SpeechBrain's LiGRU, sru's SRU ----------------
#
# Recognised by class (module and name), never by importing the package: neither is a
# dependency, and a file that holds their modules loads without them (_RenamedModules
# stands in for their classes). docs/models.md gives the mapping.

_SB_LIGRU = ("speechbrain.nnet.RNN", "LiGRU")
_SB_LIGRU_LAYER = ("speechbrain.nnet.RNN", "LiGRU_Layer")
_SRU = ("sru.modules", "SRU")
_SRU_CELL = ("sru.modules", "SRUCell")
#: Top-level packages whose classes are stood in for when a file is loaded without them.
_FOREIGN_PACKAGES = ("speechbrain", "sru")


def _class_path(obj) -> tuple[str, str]:
    return type(obj).__module__, type(obj).__qualname__


def _dotted(obj) -> str:
    return ".".join(_class_path(obj))


def _refuse(obj, problems: list[str]) -> None:
    """Raise one :class:`UnsupportedModelError` naming every unsupported option of ``obj``."""
    problems = list(dict.fromkeys(problems))  # each once, in order, however many layers have it
    if problems:
        raise UnsupportedModelError(f"{_dotted(obj)} uses what deltarnn does not support: " + "; ".join(problems))


def _from_speechbrain_ligru(obj, head: nn.Linear | None) -> RNNModel:
    """``speechbrain.nnet.RNN.LiGRU`` (or one ``LiGRU_Layer``) as an ``RNNModel("ligru")``.

    SpeechBrain 1.x: ``w = BN(W x)`` over every frame, then per step
    ``[a, z] = w_t + U h``, ``z = sigmoid(z)``, ``h = z*h + (1-z)*act(a)*mask``
    from ``h = h_init``: deltarnn's LiGRU exactly when the norm is the
    default batch norm (eval statistics), ``act`` is the default ReLU,
    ``h_init`` is zero and the eval dropout mask is 1. A bidirectional layer
    runs its one weight set over the batch and its time-flipped copy: both
    deltarnn directions get that weight set.
    """
    layers = list(obj.rnn) if _class_path(obj) == _SB_LIGRU else [obj]
    problems = []
    for i, lay in enumerate(layers):
        if _class_path(lay) != _SB_LIGRU_LAYER:
            problems.append(f"layer {i} is a {_dotted(lay)}, not a LiGRU_Layer")
            continue
        norm = getattr(lay, "norm", None)
        if not isinstance(norm, nn.BatchNorm1d) or not getattr(lay, "normalize", True):
            named = getattr(obj, "normalization", None) or type(norm).__name__
            problems.append(
                f"normalization={named!r} ({type(norm).__name__}; only the default 'batchnorm' maps onto "
                "deltarnn's LiGRU, and SpeechBrain makes every other value a layer norm)")
        elif norm.running_mean is None or norm.running_var is None:
            problems.append("a batch norm without running statistics (track_running_stats=False)")
        act = getattr(lay, "act", None)
        if not isinstance(act, nn.ReLU):
            named = getattr(obj, "nonlinearity", None) or getattr(act, "__name__", type(act).__name__)
            problems.append(f"nonlinearity={named!r} (deltarnn's LiGRU candidate is relu, SpeechBrain's default)")
        if getattr(lay, "w", None) is None or lay.w.bias is not None:
            problems.append("an input projection w with a bias (SpeechBrain's has none)")
        h_init = getattr(lay, "h_init", None)
        if h_init is not None and bool(h_init.detach().ne(0).any()):
            problems.append("a non-zero initial state h_init (deltarnn starts from h = 0)")
        mask = getattr(lay, "drop_mask_te", None)
        if mask is not None and bool(mask.detach().ne(1).any()):
            problems.append("an inference dropout mask drop_mask_te other than 1")
    if not problems:
        dims = {(bool(lay.bidirectional), int(lay.hidden_size)) for lay in layers}
        if len(dims) != 1:
            problems.append("layers with different hidden sizes or directions")
    _refuse(obj, problems)
    bidir, hs = bool(layers[0].bidirectional), int(layers[0].hidden_size)
    model = RNNModel("ligru", int(layers[0].input_size), hs, len(layers), bidir,
                     head.out_features if head is not None else 0)
    with torch.no_grad():
        for i, (lay, mine) in enumerate(zip(layers, model.layers)):
            if lay.w.in_features != mine.directions[0].w.in_features:
                raise UnsupportedModelError(
                    f"{_dotted(obj)} layer {i} takes {lay.w.in_features} features, not the "
                    f"{mine.directions[0].w.in_features} its previous layer gives")
            for dm in mine.directions:  # a bidirectional SpeechBrain layer: one weight set, both ways
                bn = lay.norm
                dm.w.weight.copy_(lay.w.weight)
                dm.u.weight.copy_(lay.u.weight)
                dm.bn.eps = bn.eps
                dm.bn.running_mean.copy_(bn.running_mean)
                dm.bn.running_var.copy_(bn.running_var)
                dm.bn.weight.copy_(bn.weight if bn.weight is not None else torch.ones_like(dm.bn.weight))
                dm.bn.bias.copy_(bn.bias if bn.bias is not None else torch.zeros_like(dm.bn.bias))
    _copy_head(model, head)
    return model.eval()


def _from_sru(obj, head: nn.Linear | None) -> RNNModel:
    """``sru.SRU`` (or one ``SRUCell``), sru 2.x, as an ``RNNModel("sru")``.

    sru computes ``U = x @ weight`` with columns ``(direction, unit, k)``,
    ``k`` = 3 (x~, f, r) or 4 (… and a highway projection, when input and
    output sizes differ; the ``rescale`` factor is then in that block's
    weights), then per step ``f = sigmoid(U1 + wc_f*c + b_f)``,
    ``r = sigmoid(U2 + wc_r*c + b_r)``, ``c = f*c + (1-f)*U0``,
    ``h = r*c + (1-r)*hw`` with ``hw = U3`` (k=4), ``hw = scale_x * x[this
    direction's slice]`` (k=3; ``scale_x`` only with ``rescale``) or 0 (no
    skip term). deltarnn's highway is ``x`` or a projection ``p``: a
    highway that is not plain ``x`` becomes a projection (the ``U3`` block,
    or a scaled selection of x, or zeros), exact in float.
    """
    if _class_path(obj) == _SRU:
        cells = list(obj.rnn_lst)
    else:
        cells = [obj]
    problems = []
    if getattr(obj, "input_to_hidden", None) is not None:
        problems.append("proj_input_to_hidden_first=True (a Linear before the first layer)")
    for i, c in enumerate(cells):
        if _class_path(c) != _SRU_CELL:
            problems.append(f"layer {i} is a {_dotted(c)}, not an SRUCell")
            continue
        if not all(hasattr(c, a) for a in ("input_size", "hidden_size", "num_matrices", "has_skip_term")):
            problems.append("a cell saved by sru before 2.1.9 (call make_backward_compatible() with that sru "
                            "and save it again)")
            continue
        if getattr(c, "custom_m", None) is not None:
            problems.append(f"custom_m={type(c.custom_m).__name__} (a custom module in place of the U "
                            "product, which may also give a per-step weight_c)")
        if getattr(c, "projection_size", 0) or getattr(c, "weight_proj", None) is not None:
            problems.append(f"projection_size={getattr(c, 'projection_size', '?')} (a factorised weight)")
        if getattr(c, "layer_norm", None) is not None:
            problems.append("layer_norm=True")
        if getattr(c, "activation_type", 0) != 0:
            problems.append(f"use_tanh=True (activation {getattr(c, 'activation', '?')!r} on c)")
        wc = getattr(c, "weight_c", None)
        if wc is None or wc.dim() != 1:
            problems.append("a weight_c that is not one vector per gate (a custom weight_c)")
    if not problems and len({(bool(c.bidirectional), int(c.hidden_size)) for c in cells}) != 1:
        problems.append("layers with different hidden sizes or directions")
    _refuse(obj, problems)
    bidir, hs = bool(cells[0].bidirectional), int(cells[0].hidden_size)
    nd = 2 if bidir else 1
    model = RNNModel("sru", int(cells[0].input_size), hs, len(cells), bidir,
                     head.out_features if head is not None else 0)
    units = torch.arange(hs)
    with torch.no_grad():
        for i, (c, mine) in enumerate(zip(cells, model.layers)):
            n_in, k = int(c.input_size), int(c.num_matrices)
            want = model.input_size if i == 0 else nd * hs
            if n_in != want or tuple(c.weight.shape) != (n_in, nd * hs * k):
                raise UnsupportedModelError(
                    f"{_dotted(obj)} layer {i}: weight {tuple(c.weight.shape)} does not fit input size {want}, "
                    f"{nd} direction(s) of {hs} units and {k} blocks")
            weight = c.weight.detach().reshape(n_in, nd, hs, k)
            wc = c.weight_c.detach().reshape(2, nd, hs)
            bias = c.bias.detach().reshape(2, nd, hs)
            scale = float(c.scale_x.reshape(-1)[0]) if getattr(c, "rescale", False) else 1.0
            for di in range(nd):
                blocks = list(weight[:, di].permute(2, 1, 0))  # k blocks of (hidden, input): x~, f, r[, p]
                if not c.has_skip_term:
                    hw = torch.zeros(hs, n_in)
                elif k == 4:
                    hw = blocks[3]
                elif nd == 1 and scale == 1.0:
                    hw = None  # hw = x: deltarnn's own identity highway
                else:  # hw = scale * this direction's slice of x
                    hw = torch.zeros(hs, n_in)
                    hw[units, di * hs + units] = scale
                w = torch.cat(blocks[:3] + ([hw] if hw is not None else []))
                if (hw is not None) != mine.directions[di].projected:
                    mine.directions[di] = SRUDirection(n_in, hs, projected=hw is not None)
                dm = mine.directions[di]
                dm.w.weight.copy_(w)
                dm.vf.copy_(wc[0, di])
                dm.vr.copy_(wc[1, di])
                dm.bf.copy_(bias[0, di])
                dm.br.copy_(bias[1, di])
    _copy_head(model, head)
    return model.eval()


#: The other libraries' recurrent modules :func:`from_torch` converts, by (module, class name).
_IMPORTERS = {
    _SB_LIGRU: _from_speechbrain_ligru,
    _SB_LIGRU_LAYER: _from_speechbrain_ligru,
    _SRU: _from_sru,
    _SRU_CELL: _from_sru,
}
_SUPPORTED = "nn.LSTM, nn.GRU, speechbrain.nnet.RNN.LiGRU, sru.SRU or this project's RNNModel"


def _is_recurrent(m) -> bool:
    return isinstance(m, nn.RNNBase) or _class_path(m) in _IMPORTERS


def _outermost(obj: nn.Module, pred) -> list[nn.Module]:
    """Submodules of ``obj`` for which ``pred`` holds, not looking inside those (nor inside recurrent ones)."""
    found = []

    def walk(m):
        if pred(m):
            found.append(m)
        elif not _is_recurrent(m):
            for child in m.children():
                walk(child)

    walk(obj)
    return found


def from_torch(obj) -> RNNModel:
    """Return an :class:`RNNModel` equivalent to ``obj``.

    Accepts an ``RNNModel``, an ``nn.LSTM`` / ``nn.GRU``, SpeechBrain's
    ``speechbrain.nnet.RNN.LiGRU``, sru's ``sru.SRU`` (docs/models.md), or a
    module holding exactly one of those and at most one ``nn.Linear`` (taken
    as a per-frame head applied to the recurrent output). Anything else
    raises :class:`UnsupportedModelError` naming what is wrong.
    """
    if isinstance(obj, RNNModel):
        return obj
    if isinstance(obj, dict):
        raise UnsupportedModelError(
            "the file holds a state_dict, not a module: save the whole model with torch.save(model, path)")
    if not isinstance(obj, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(obj).__name__}")
    if isinstance(obj, (nn.LSTM, nn.GRU)):
        return _from_torch_rnn(obj, None)
    if _class_path(obj) in _IMPORTERS:
        return _IMPORTERS[_class_path(obj)](obj, None)
    if isinstance(obj, nn.RNNBase):
        raise UnsupportedModelError(f"{type(obj).__name__} is not supported: use {_SUPPORTED}")
    if type(obj).__module__.split(".")[0] in _FOREIGN_PACKAGES:
        raise UnsupportedModelError(f"{_dotted(obj)} is not supported: use {_SUPPORTED}")
    inner = [m for m in obj.modules() if isinstance(m, RNNModel)]
    if len(inner) == 1:
        return inner[0]
    rnns = _outermost(obj, _is_recurrent)
    if len(rnns) != 1:
        raise UnsupportedModelError(
            f"{type(obj).__name__} holds {len(rnns)} recurrent modules; exactly one {_SUPPORTED} "
            "(with an optional nn.Linear head) is supported")
    rnn = rnns[0]
    if not isinstance(rnn, (nn.LSTM, nn.GRU)) and _class_path(rnn) not in _IMPORTERS:
        raise UnsupportedModelError(f"{type(rnn).__name__} is not supported: use {_SUPPORTED}")
    linears = _outermost(obj, lambda m: isinstance(m, nn.Linear))
    if len(linears) > 1:
        raise UnsupportedModelError(
            f"{type(obj).__name__} holds {len(linears)} nn.Linear layers; at most one (the output head) is supported")
    rnn_params = {id(p) for p in rnn.parameters()} | {id(p) for m in linears for p in m.parameters()}
    other = [n for n, p in obj.named_parameters() if id(p) not in rnn_params]
    if other:
        raise UnsupportedModelError(
            f"{type(obj).__name__} has parameters outside its recurrent module and head: {', '.join(other[:5])}")
    head = linears[0] if linears else None
    if isinstance(rnn, (nn.LSTM, nn.GRU)):
        return _from_torch_rnn(rnn, head)
    return _IMPORTERS[_class_path(rnn)](rnn, head)


class _StandIn(nn.Module):
    """A module of a package that is not imported, as unpickled: its parameters, buffers,
    submodules and attributes, for :func:`from_torch` to read; it does not run."""

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{_dotted(self)} was loaded without its package: convert it with "
                           "deltarnn.models.from_torch")


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    """One :class:`_StandIn` subclass per (module, class name), carrying that name."""
    if (module, name) not in _STAND_INS:
        _STAND_INS[module, name] = type(name, (_StandIn,), {"__module__": module, "__qualname__": name})
    return _STAND_INS[module, name]


class _RenamedModules(pickle.Unpickler):
    """Unpickles models saved before the package was ``deltarnn`` (its modules were ``sw.*``), and
    models of SpeechBrain and sru without importing those (a stand-in class with the same name
    takes each recognised class, and any other of those packages' classes that does not import)."""

    def find_class(self, module: str, name: str):
        if module == "sw.models":
            module = "deltarnn.models"
        if (module, name) in _IMPORTERS:
            return _stand_in(module, name)
        if module.split(".")[0] in _FOREIGN_PACKAGES:
            try:
                return super().find_class(module, name)
            except Exception:  # noqa: BLE001 - not installed, or installed and broken (a torchaudio mismatch)
                return _stand_in(module, name)
        return super().find_class(module, name)


#: ``torch.load``'s ``pickle_module``: :mod:`pickle` with :class:`_RenamedModules`.
_PICKLE = ModuleType("deltarnn_pickle")
_PICKLE.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")}, Unpickler=_RenamedModules)


def load_torch_model(path) -> RNNModel:
    """Load a ``torch.save``-d model file and convert it with :func:`from_torch`.

    Raises :class:`UnsupportedModelError` with a readable message when the
    file cannot be read or holds something unsupported. Models saved by
    earlier versions of this project load too.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
    except FileNotFoundError:
        raise UnsupportedModelError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise UnsupportedModelError(f"{path} is not a PyTorch model file ({type(e).__name__}: {e})") from None
    model = from_torch(obj)
    return model.eval()


# --- canonical form --------------------------------------------------------------------


@dataclass
class DirectionSpec:
    """Float parameters of one direction of one layer, in canonical order.

    ``w_x`` rows are gate-major (LSTM i,f,g,o; GRU r,z,n; LiGRU a,z with
    batch norm folded in; SRU x~,f,r[,p]); ``w_h`` likewise (``None`` for
    SRU). ``vectors`` holds the cell's other parameters: ``bias`` (LSTM,
    LiGRU; GRU r,z,n input-side bias with the hidden r,z biases folded in;
    SRU f,r), ``bias_hn`` (GRU), ``vf``/``vr`` (SRU).
    """

    w_x: np.ndarray
    w_h: np.ndarray | None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """The float model as plain arrays: what the quantizer works from."""

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    layers: list[list[DirectionSpec]]
    head_w: np.ndarray | None
    head_b: np.ndarray | None
    float_params: int

    @property
    def num_classes(self) -> int:
        return 0 if self.head_w is None else self.head_w.shape[0]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def canonical(model: RNNModel) -> ModelSpec:
    """Extract every layer and direction of ``model`` as a :class:`ModelSpec`."""
    model = from_torch(model)
    hs = model.hidden_size
    layers = []
    for layer in model.layers:
        dirs = []
        if model.cell in ("lstm", "gru"):
            for d in range(2 if model.bidirectional else 1):
                sfx = "_l0_reverse" if d else "_l0"
                w_x, w_h = _np(getattr(layer, "weight_ih" + sfx)), _np(getattr(layer, "weight_hh" + sfx))
                b_ih, b_hh = _np(getattr(layer, "bias_ih" + sfx)), _np(getattr(layer, "bias_hh" + sfx))
                if model.cell == "lstm":
                    vec = {"bias": b_ih + b_hh}
                else:
                    folded = b_ih.copy()
                    folded[: 2 * hs] += b_hh[: 2 * hs]
                    vec = {"bias": folded, "bias_hn": b_hh[2 * hs:].copy()}
                dirs.append(DirectionSpec(w_x, w_h, vec))
        elif model.cell == "ligru":
            for dm in layer.directions:
                bn = dm.bn
                k = _np(bn.weight) / np.sqrt(_np(bn.running_var) + bn.eps)
                bias = _np(bn.bias) - k * _np(bn.running_mean)
                dirs.append(DirectionSpec(k[:, None] * _np(dm.w.weight), _np(dm.u.weight), {"bias": bias}))
        else:
            for dm in layer.directions:
                dirs.append(DirectionSpec(_np(dm.w.weight), None, {
                    "bias": np.concatenate([_np(dm.bf), _np(dm.br)]), "vf": _np(dm.vf), "vr": _np(dm.vr)}))
        layers.append(dirs)
    head_w = _np(model.head.weight) if model.head is not None else None
    head_b = _np(model.head.bias) if model.head is not None else None
    n_params = sum(p.numel() for p in model.parameters())
    if model.cell == "ligru":  # batch norm's running statistics are parameters at inference
        n_params += sum(2 * layer.directions[0].bn.num_features * len(layer.directions) for layer in model.layers)
    return ModelSpec(model.cell, model.input_size, hs, model.num_layers, model.bidirectional,
                     layers, head_w, head_b, n_params)
