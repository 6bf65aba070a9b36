"""Stand-ins for the other libraries' recurrent modules, under those libraries' class paths.

``speechbrain.nnet.RNN.LiGRU`` / ``LiGRU_Layer`` (SpeechBrain 1.1.2) and
``sru.modules.SRU`` / ``SRUCell`` (sru 2.6.0), with the same constructor
arguments, attribute, parameter and buffer names, initialisation and
inference forward pass as those packages' sources (speechbrain/nnet/RNN.py;
sru/modules.py and sru/ops.py's ``elementwise_recurrence_naive``), statement
for statement where it matters for the numbers. Neither package is a
dependency, and SpeechBrain does not import beside this project's torch
(its torchaudio does not match), so the importers are tested on these,
pickled with ``torch.save`` under the real class paths (:func:`foreign_modules`
puts the module paths in ``sys.modules`` for the save only), and on the real
sru where it imports.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types
from typing import Optional

import torch
from torch import nn

# --- SpeechBrain 1.x: speechbrain/nnet/RNN.py ---------------------------------------


class LiGRU(nn.Module):
    def __init__(self, hidden_size, input_shape, nonlinearity="relu", normalization="batchnorm",
                 num_layers=1, bias=True, dropout=0.0, re_init=True, bidirectional=False):
        super().__init__()
        self.hidden_size = hidden_size
        self.nonlinearity = nonlinearity
        self.num_layers = num_layers
        self.normalization = normalization
        self.bias = bias
        self.dropout = dropout
        self.re_init = re_init
        self.bidirectional = bidirectional
        self.reshape = False
        if len(input_shape) > 3:
            self.reshape = True
        self.fea_dim = float(torch.prod(torch.tensor(input_shape[2:])))
        self.batch_size = input_shape[0]
        self.rnn = self._init_layers()
        if self.re_init:
            rnn_init(self.rnn)

    def _init_layers(self):
        rnn = nn.ModuleList([])
        current_dim = self.fea_dim
        for i in range(self.num_layers):
            rnn.append(LiGRU_Layer(current_dim, self.hidden_size, self.num_layers, self.batch_size,
                                   dropout=self.dropout, nonlinearity=self.nonlinearity,
                                   normalization=self.normalization, bias=self.bias,
                                   bidirectional=self.bidirectional))
            current_dim = self.hidden_size * 2 if self.bidirectional else self.hidden_size
        return rnn

    def forward(self, x, hx: Optional[torch.Tensor] = None):
        if self.reshape and x.ndim == 4:
            x = x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
        return self._forward_ligru(x, hx=hx)

    def _forward_ligru(self, x, hx: Optional[torch.Tensor]):
        h = []
        if hx is not None and self.bidirectional:
            hx = hx.reshape(self.num_layers, self.batch_size * 2, self.hidden_size)
        for i, ligru_lay in enumerate(self.rnn):
            x = ligru_lay(x, hx=hx[i] if hx is not None else None)
            h.append(x[:, -1, :])
        h = torch.stack(h, dim=1)
        if self.bidirectional:
            h = h.reshape(h.shape[1] * 2, h.shape[0], self.hidden_size)
        else:
            h = h.transpose(0, 1)
        return x, h


class LiGRU_Layer(nn.Module):  # noqa: N801 - SpeechBrain's name
    def __init__(self, input_size, hidden_size, num_layers, batch_size, dropout=0.0, nonlinearity="relu",
                 normalization="batchnorm", bias=True, bidirectional=False):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.input_size = int(input_size)
        self.batch_size = batch_size
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.bias = bias
        self.w = nn.Linear(self.input_size, 2 * self.hidden_size, bias=False)
        self.u = nn.Linear(self.hidden_size, 2 * self.hidden_size, bias=False)
        if self.bidirectional:
            self.batch_size = self.batch_size * 2
        self.normalize = False
        if normalization == "batchnorm":
            self.norm = nn.BatchNorm1d(2 * self.hidden_size, momentum=0.05)
            self.normalize = True
        elif normalization == "layernorm":
            self.norm = nn.LayerNorm(2 * self.hidden_size)
            self.normalize = True
        else:  # SpeechBrain's "disabled" normalisation is a layer norm too
            self.norm = nn.LayerNorm(2 * self.hidden_size)
            self.normalize = True
        if not self.bias:
            self.norm.bias.data.fill_(0)
            self.norm.bias.requires_grad = False
        self.register_buffer("h_init", torch.zeros(1, self.hidden_size))
        self._init_drop()
        if nonlinearity == "tanh":
            self.act = nn.Tanh()
        elif nonlinearity == "sin":
            self.act = torch.sin
        elif nonlinearity == "leaky_relu":
            self.act = nn.LeakyReLU()
        else:
            self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, hx: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.bidirectional:
            x_flip = x.flip(1)
            x = torch.cat([x, x_flip], dim=0)
        self._change_batch_size(x)
        w = self.w(x)
        if self.normalize:
            w_bn = self.norm(w.reshape(w.shape[0] * w.shape[1], w.shape[2]))
            w = w_bn.reshape(w.shape[0], w.shape[1], w.shape[2])
        if hx is not None:
            h = self._ligru_cell(w, hx)
        else:
            h_init = self.h_init.broadcast_to(w.shape[0], self.h_init.shape[1])
            h = self._ligru_cell(w, h_init)
        if self.bidirectional:
            h_f, h_b = h.chunk(2, dim=0)
            h_b = h_b.flip(1)
            h = torch.cat([h_f, h_b], dim=2)
        return h

    def _ligru_cell(self, w, ht):
        hiddens = []
        drop_mask = self._sample_drop_mask(w)
        for k in range(w.shape[1]):
            gates = w[:, k] + self.u(ht)
            at, zt = gates.chunk(2, 1)
            zt = torch.sigmoid(zt)
            hcand = self.act(at) * drop_mask
            ht = zt * ht + (1 - zt) * hcand
            hiddens.append(ht)
        return torch.stack(hiddens, dim=1)

    def _init_drop(self):
        self.drop = nn.Dropout(p=self.dropout, inplace=False)
        self.N_drop_masks = 16000
        self.drop_mask_cnt = 0
        self.register_buffer("drop_masks", self.drop(torch.ones(self.N_drop_masks, self.hidden_size)).data)
        self.register_buffer("drop_mask_te", torch.tensor([1.0]).float())

    def _sample_drop_mask(self, w):
        if self.training:
            if self.drop_mask_cnt + self.batch_size > self.N_drop_masks:
                self.drop_mask_cnt = 0
                self.drop_masks = self.drop(torch.ones(self.N_drop_masks, self.hidden_size, device=w.device)).data
            drop_mask = self.drop_masks[self.drop_mask_cnt: self.drop_mask_cnt + self.batch_size]
            self.drop_mask_cnt = self.drop_mask_cnt + self.batch_size
        else:
            self.drop_mask_te = self.drop_mask_te.to(w.device)
            drop_mask = self.drop_mask_te
        return drop_mask

    def _change_batch_size(self, x):
        if self.batch_size != x.shape[0]:
            self.batch_size = x.shape[0]
            if self.training:
                self.drop_masks = self.drop(torch.ones(self.N_drop_masks, self.hidden_size, device=x.device)).data


def rnn_init(module):
    for name, param in module.named_parameters():
        if "weight_hh" in name or ".u.weight" in name:
            nn.init.orthogonal_(param)


# --- sru 2.x: sru/modules.py, sru/ops.py --------------------------------------------


class SRUCell(nn.Module):
    def __init__(self, input_size, hidden_size, dropout=0.0, rnn_dropout=0.0, bidirectional=False, n_proj=0,
                 use_tanh=False, highway_bias=0.0, has_skip_term=True, layer_norm=False, rescale=True, v1=False,
                 custom_m=None, amp_recurrence_fp16=False, normalize_after=False, weight_c_init=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size * 2 if bidirectional else hidden_size
        self.rnn_dropout = float(rnn_dropout)
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.has_skip_term = has_skip_term
        self.highway_bias = highway_bias
        self.v1 = v1
        self.rescale = rescale
        self.activation_type = 0
        self.activation = "none"
        self.custom_m = custom_m
        if use_tanh:
            self.activation_type = 1
            self.activation = "tanh"
        self.amp_recurrence_fp16 = amp_recurrence_fp16
        self.normalize_after = normalize_after
        self.weight_c_init = weight_c_init
        self.projection_size = 0
        if 0 < n_proj < self.input_size and n_proj < self.output_size:
            self.projection_size = n_proj
        self.num_matrices = 3
        if has_skip_term and self.input_size != self.output_size:
            self.num_matrices = 4
        if self.custom_m is None:
            if self.projection_size == 0:
                self.weight_proj = None
                self.weight = nn.Parameter(torch.Tensor(input_size, self.output_size * self.num_matrices))
            else:
                self.weight_proj = nn.Parameter(torch.Tensor(input_size, self.projection_size))
                self.weight = nn.Parameter(torch.Tensor(self.projection_size, self.output_size * self.num_matrices))
        self.weight_c = nn.Parameter(torch.Tensor(2 * self.output_size))
        self.bias = nn.Parameter(torch.Tensor(2 * self.output_size))
        self.register_buffer("scale_x", torch.FloatTensor([0]))
        self.layer_norm = None
        if layer_norm:
            self.layer_norm = nn.LayerNorm(self.output_size if normalize_after else self.input_size)
        self.reset_parameters()

    def reset_parameters(self):
        self.bias.data.zero_()
        bias_val, output_size = self.highway_bias, self.output_size
        self.bias.data[output_size:].zero_().add_(bias_val)
        self.scale_x.data[0] = 1
        if self.rescale and self.has_skip_term:
            self.scale_x.data[0] = (1 + math.exp(bias_val) * 2) ** 0.5
        if self.custom_m is None:
            d = self.weight.size(0)
            val_range = (3.0 / d) ** 0.5
            self.weight.data.uniform_(-val_range, val_range)
            if self.projection_size > 0:
                val_range = (3.0 / self.weight_proj.size(0)) ** 0.5
                self.weight_proj.data.uniform_(-val_range, val_range)
            w = self.weight.data.view(d, -1, self.hidden_size, self.num_matrices)
            if self.dropout > 0:
                w[:, :, :, 0].mul_((1 - self.dropout) ** 0.5)
            if self.rnn_dropout > 0:
                w.mul_((1 - self.rnn_dropout) ** 0.5)
            if self.layer_norm:
                w.mul_(0.1)
            if self.rescale and self.has_skip_term and self.num_matrices == 4:
                w[:, :, :, 3].mul_((1 + math.exp(bias_val) * 2) ** 0.5)
        if not self.v1:
            if self.weight_c_init is None:
                self.weight_c.data.uniform_(-3.0 ** 0.5, 3.0 ** 0.5)
                self.weight_c.data.mul_(0.5 ** 0.5)
            else:
                self.weight_c.data.uniform_(-self.weight_c_init, self.weight_c_init)
            if self.custom_m is None:
                w[:, :, :, 1].mul_(0.5 ** 0.5)
                w[:, :, :, 2].mul_(0.5 ** 0.5)
        else:
            self.weight_c.data.zero_()
            self.weight_c.requires_grad = False

    def forward(self, input, c0=None, mask_pad=None):
        batch_size = input.size(-2)
        if c0 is None:
            c0 = torch.zeros(batch_size, self.output_size, dtype=input.dtype, device=input.device)
        residual = input
        if self.layer_norm is not None and not self.normalize_after:
            input = self.layer_norm(input)
        scale_val = self.scale_x if self.rescale else None
        x = input if input.dim() == 2 else input.contiguous().view(-1, self.input_size)
        U = x.mm(self.weight_proj).mm(self.weight) if self.weight_proj is not None else x.mm(self.weight)
        h, c = _elementwise_recurrence_naive(U, residual, self.weight_c, self.bias, c0, self.activation_type,
                                             self.hidden_size, self.bidirectional, self.has_skip_term, scale_val)
        if self.layer_norm is not None and self.normalize_after:
            h = self.layer_norm(h)
        return h, c


def _elementwise_recurrence_naive(U, x, weight_c, bias, c_init, activation_type, hidden_size, bidirectional,
                                  has_skip_term, scale_x=None):
    """sru/ops.py's ``elementwise_recurrence_naive``, without dropout and padding (inference)."""
    bidir = 2 if bidirectional else 1
    length = x.size(0) if x.dim() == 3 else 1
    batch = x.size(-2)
    k = U.size(-1) // hidden_size // bidir
    d = hidden_size
    U = U.contiguous().view(length, batch, bidir, d, k)
    forget_wc, reset_wc = weight_c.view(2, bidir, d)
    forget_bias, reset_bias = bias.view(2, bidir, d)
    if not has_skip_term:
        x_prime = None
    elif k == 3:
        x_prime = x.view(length, batch, bidir, d)
        x_prime = x_prime * scale_x if scale_x is not None else x_prime
    else:
        x_prime = U[..., 3]
    c_init = c_init.view(batch, bidir, d)
    h = x.new_zeros(length, batch, bidir, d)
    c_final = []
    for di in range(bidir):
        time_seq = range(length) if di == 0 else range(length - 1, -1, -1)
        c_prev = c_init[:, di, :]
        fb, rb = forget_bias[di], reset_bias[di]
        fw = forget_wc[di].expand(batch, d)
        rw = reset_wc[di].expand(batch, d)
        u0 = U[:, :, di, :, 0].chunk(length)
        u1 = (U[:, :, di, :, 1] + fb).chunk(length)
        u2 = (U[:, :, di, :, 2] + rb).chunk(length)
        if x_prime is not None:
            xp = x_prime[:, :, di, :].chunk(length)
        for t in time_seq:
            forget_t = (u1[t] + c_prev * fw).sigmoid()
            reset_t = (u2[t] + c_prev * rw).sigmoid()
            c_t = u0[t] + (c_prev - u0[t]) * forget_t
            c_prev = c_t
            g_c_t = c_t if activation_type == 0 else c_t.tanh()
            if x_prime is not None:
                h_t = xp[t] + (g_c_t - xp[t]) * reset_t
            else:
                h_t = g_c_t * reset_t
            h[t, :, di, :] = h_t
        c_final.append(c_t.view(batch, d))
    return h.view(length, batch, -1), torch.stack(c_final, dim=1).view(batch, -1)


class SRU(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers=2, dropout=0.0, rnn_dropout=0.0, bidirectional=False,
                 projection_size=0, use_tanh=False, layer_norm=False, highway_bias=0.0, has_skip_term=True,
                 rescale=False, v1=False, nn_rnn_compatible_return=False, custom_m=None,
                 proj_input_to_hidden_first=False, amp_recurrence_fp16=False, normalize_after=False,
                 weight_c_init=None):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size * 2 if bidirectional else hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.rnn_dropout = rnn_dropout
        self.projection_size = projection_size
        self.bidirectional = bidirectional
        self.use_layer_norm = layer_norm
        self.has_skip_term = has_skip_term
        self.num_directions = 2 if bidirectional else 1
        self.nn_rnn_compatible_return = nn_rnn_compatible_return
        self.input_to_hidden = None
        if proj_input_to_hidden_first and input_size != self.output_size:
            first_layer_input_size = self.output_size
            self.input_to_hidden = nn.Linear(input_size, self.output_size, bias=False)
        else:
            first_layer_input_size = input_size
        self.amp_recurrence_fp16 = amp_recurrence_fp16
        rnn_lst = nn.ModuleList()
        for i in range(num_layers):
            custom_m_i = None
            if custom_m is not None:
                custom_m_i = custom_m[i] if isinstance(custom_m, list) else custom_m
            rnn_lst.append(SRUCell(first_layer_input_size if i == 0 else self.output_size, self.hidden_size,
                                   dropout=dropout if i + 1 != num_layers else 0, rnn_dropout=rnn_dropout,
                                   bidirectional=bidirectional, n_proj=projection_size, use_tanh=use_tanh,
                                   layer_norm=layer_norm, highway_bias=highway_bias, has_skip_term=has_skip_term,
                                   rescale=rescale, v1=v1, custom_m=custom_m_i,
                                   amp_recurrence_fp16=amp_recurrence_fp16, normalize_after=normalize_after,
                                   weight_c_init=weight_c_init))
        self.rnn_lst = rnn_lst

    def forward(self, input, c0=None, mask_pad=None):
        zeros = torch.zeros(input.size(1), self.output_size, dtype=input.dtype, device=input.device)
        prevx = input if self.input_to_hidden is None else self.input_to_hidden(input)
        lstc = []
        for rnn in self.rnn_lst:
            h, c = rnn(prevx, zeros)
            prevx = h
            lstc.append(c)
        return prevx, torch.stack(lstc)


# --- pickling under the real class paths --------------------------------------------

_PATHS = {"speechbrain.nnet.RNN": (LiGRU, LiGRU_Layer), "sru.modules": (SRU, SRUCell)}
for _module, _classes in _PATHS.items():
    for _cls in _classes:
        _cls.__module__ = _module


@contextlib.contextmanager
def foreign_modules():
    """``speechbrain.nnet.RNN`` and ``sru.modules`` in ``sys.modules`` with the stand-ins, for
    ``torch.save``; the real entries (if any) come back, and stand-in ones go, on exit."""
    names = {}
    for module, classes in _PATHS.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            names[".".join(parts[:i])] = None
        names[module] = classes
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n, classes in names.items():
            mod = types.ModuleType(n)
            for cls in classes or ():
                setattr(mod, cls.__qualname__, cls)
            sys.modules[n] = mod
        yield
    finally:
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old
