"""Training of per-frame classifiers.

Two entry points:

- :func:`train_frames`: a minimal loop on equal-length arrays (used by the demo);
- :func:`train_speech`: phone classifiers on a speech corpus
  (:mod:`deltarnn.speech.datasets`) with utterances of varying length: length-bucketed
  batches, zero padding with a mask (cross entropy ignores the padded
  frames), a checkpoint every epoch (resumable), the dev-split phone error
  rate every epoch, and the model with the best dev PER kept as a
  ``torch.save``-d :class:`~deltarnn.models.RNNModel` that ``deltarnn quantize``
  accepts. ``deltarnn train`` is its command line (:mod:`deltarnn.cli.study`).

:func:`forward_padded` computes exactly what ``RNNModel.forward`` computes on
each utterance alone, for a padded batch: unidirectional LSTM/GRU layers run as
they are (padding only follows the real frames), LiGRU/SRU directions step over ``unbind``-ed time slices (their
backward pass is then linear, not quadratic, in the length), reverse
directions flip every utterance within its own length, and LiGRU's batch
norm sees only real frames.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deltarnn.quant.qmodel import write_atomically

IGNORE = -100  # label of padded frames



def _save(obj, path) -> None:
    """``torch.save`` that a Ctrl-C cannot leave half written (a resumed run reads the checkpoint)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomically(path, buf.getvalue())

def train_frames(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 30, lr: float = 1e-2,
                 batch: int = 16, seed: int = 0, progress=None) -> list[float]:
    """Train ``model`` to label every frame of ``x`` ``(N, T, F)`` with ``y`` ``(N, T)``.

    Adam and per-frame cross entropy. ``progress`` is an optional callable
    ``(epoch, loss)``. Returns the mean loss of each epoch.
    """
    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            logits = model(xt[idx])
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
        if progress is not None:
            progress(epoch, losses[-1])
    model.eval()
    return losses


def frame_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Share of frames whose argmax equals the label."""
    return float((np.asarray(logits).argmax(-1) == y).mean())


# --- padded batches ---------------------------------------------------------------------


def pad_batch(feats: list[np.ndarray], labels: list[np.ndarray] | None = None, delay: int = 0):
    """Zero-pad utterances to ``(B, Tmax, F)``; labels padded with ``IGNORE``.

    With an output ``delay`` every utterance is first followed by ``delay``
    zero frames (:func:`deltarnn.quant.qmodel.delay_inputs`) and its labels move
    ``delay`` frames later, so output ``t + delay`` is trained on label ``t``.
    Returns ``(x, y_or_None, lengths)`` as tensors.
    """
    lengths = torch.as_tensor([len(f) + delay for f in feats], dtype=torch.long)
    tmax = int(lengths.max())
    x = torch.zeros(len(feats), tmax, feats[0].shape[1])
    for i, f in enumerate(feats):
        x[i, :len(f)] = torch.as_tensor(f)
    y = None
    if labels is not None:
        y = torch.full((len(feats), tmax), IGNORE, dtype=torch.long)
        for i, lab in enumerate(labels):
            y[i, delay:delay + len(lab)] = torch.as_tensor(lab)
    return x, y, lengths


def length_batches(lengths, batch: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (little padding).

    With ``rng`` the order within equal-ish lengths is jittered and the batch
    order shuffled (training); without, batches are in length order.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    key = lengths + (rng.uniform(0, 8, len(lengths)) if rng is not None else 0)
    order = np.argsort(key, kind="stable")
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def _reverse_index(lengths: torch.Tensor, tmax: int) -> torch.Tensor:
    """Per utterance, ``t -> len-1-t`` inside the utterance, identity on padding (an involution)."""
    t = torch.arange(tmax).unsqueeze(0)
    lens = lengths.unsqueeze(1)
    return torch.where(t < lens, lens - 1 - t, t)


def _flip(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _torch_direction(layer: nn.RNNBase, x: torch.Tensor, d: int) -> torch.Tensor:
    """One direction of a one-layer ``nn.LSTM`` / ``nn.GRU`` (packed sequences are ~20x slower on CPU)."""
    sfx = "_l0_reverse" if d else "_l0"
    ws = [getattr(layer, n + sfx) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    h0 = x.new_zeros(1, x.shape[0], layer.hidden_size)
    if isinstance(layer, nn.LSTM):
        return torch._VF.lstm(x, (h0, h0), ws, True, 1, 0.0, layer.training, False, True)[0]
    return torch._VF.gru(x, h0, ws, True, 1, 0.0, layer.training, False, True)[0]


def forward_padded(model, x: torch.Tensor, lengths: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
    """``model`` (an RNNModel) on a zero-padded batch; frames past an utterance's end are junk.

    Every real frame equals what ``model(utterance[None])`` gives (up to float
    rounding), for unidirectional and bidirectional models alike. ``dropout``
    (training only) drops layer outputs, between layers and before the head.
    """
    b, tmax, _ = x.shape
    mask = torch.arange(tmax).unsqueeze(0) < lengths.unsqueeze(1)
    full = bool(mask.all())
    rev = None if full else _reverse_index(lengths, tmax)
    for layer in model.layers:
        if isinstance(layer, nn.RNNBase):
            if not layer.bidirectional:  # padding only follows the real frames: nothing to do
                x = layer(x)[0]
            else:  # the reverse direction runs on each utterance flipped within its length
                xr = x.flip(1) if full else _flip(x, rev)
                hr = _torch_direction(layer, xr, 1)
                x = torch.cat([_torch_direction(layer, x, 0), hr.flip(1) if full else _flip(hr, rev)], dim=-1)
        else:
            outs = [layer.directions[0](x, mask)]
            if len(layer.directions) == 2:
                xr = x.flip(1) if full else _flip(x, rev)
                hr = layer.directions[1](xr, mask)
                outs.append(hr.flip(1) if full else _flip(hr, rev))
            x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        if dropout:
            x = nn.functional.dropout(x, dropout, training=model.training)
    return model.head(x) if model.head is not None else x


@torch.no_grad()
def predict(model, feats: list[np.ndarray], batch: int = 64) -> list[np.ndarray]:
    """Float per-frame scores ``(T, C)`` for every utterance, aligned with its frames.

    Padding never changes a result; a model's ``output_delay`` is applied
    (zero frames appended, the first outputs dropped).
    """
    model.eval()
    delay = model.output_delay
    out: list[np.ndarray | None] = [None] * len(feats)
    for idx in length_batches([len(f) for f in feats], batch):
        x, _, lengths = pad_batch([feats[i] for i in idx], delay=delay)
        scores = forward_padded(model, x, lengths).numpy()
        for j, i in enumerate(idx):
            out[i] = scores[j, delay:delay + len(feats[i])]
    return out


# --- speech training --------------------------------------------------------------------


class TrainError(ValueError):
    """Bad training options or files (shown as a one-line error by the CLI)."""


@dataclass
class TrainConfig:
    """A training recipe (``deltarnn train``'s options).

    Adam at ``lr``, annealed along a cosine to ``lr * final_lr`` over the
    ``epochs`` (one value per epoch); gradients clipped to norm ``clip``;
    ``dropout`` on every layer's output in training; the model's output at
    frame ``t + delay`` is trained on the label of frame ``t`` (lookahead a
    streaming device runs as it is). The epoch with the lowest dev frame
    error rate is kept.
    """

    cell: str = "gru"
    dataset: str = "espeak"
    layers: int = 2
    hidden: int = 128
    bidirectional: bool = False
    epochs: int = 20
    lr: float = 2e-3
    batch: int = 16
    seed: int = 0
    max_utts: int | None = None
    clip: float = 5.0
    final_lr: float = 0.05
    dropout: float = 0.1
    delay: int = 3

    def check(self) -> None:
        from deltarnn.speech.datasets import DATASETS
        from deltarnn.models import CELLS

        if self.cell not in CELLS:
            raise TrainError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.dataset.lower() not in DATASETS:
            raise TrainError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        for name in ("layers", "hidden", "epochs", "batch"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.delay < 0:
            raise TrainError(f"--delay must be at least 0, got {self.delay}")
        if not 0 <= self.dropout < 1:
            raise TrainError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainError(f"--lr must be a positive number, got {self.lr}")
        if self.max_utts is not None and self.max_utts < 1:
            raise TrainError(f"--max-utts must be at least 1, got {self.max_utts}")

    def architecture(self) -> dict:
        """The options that must match when resuming (the others may change)."""
        d = asdict(self)
        for k in ("epochs", "lr", "batch", "clip", "final_lr", "dropout"):
            d.pop(k)
        return d

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (0-based): a cosine from ``lr`` to ``lr * final_lr``."""
        frac = epoch / max(self.epochs - 1, 1)
        return self.lr * (self.final_lr + (1 - self.final_lr) * 0.5 * (1 + math.cos(math.pi * frac)))


@dataclass
class TrainResult:
    model_path: str
    checkpoint_path: str
    history: list[dict] = field(default_factory=list)
    best_dev_fer: float = float("inf")
    best_epoch: int = -1

    @property
    def best_dev_per(self) -> float:
        """Undecoded dev PER (%) of the kept epoch."""
        return self.history[self.best_epoch]["dev_per"] if self.history else float("nan")


def load_split(name: str, split: str, max_utts: int | None = None):
    """Load a corpus split; unknown names and missing corpora raise :class:`TrainError`."""
    from deltarnn.speech.datasets import load_dataset

    try:
        ds = load_dataset(name, split, **({"progress": False} if name.lower().startswith("espeak") else {}))
    except (ValueError, FileNotFoundError, OSError) as e:
        raise TrainError(f"cannot load dataset {name!r} split {split!r}: {e}") from None
    utts = list(ds)
    if max_utts is not None:
        utts = utts[:max_utts]
    return ds, utts


def dev_scores(model, feats, labels) -> tuple[float, float]:
    """Frame error rate and undecoded phone error rate, in %, of the float model."""
    from deltarnn.speech.datasets import phone_error_rate

    scores = predict(model, feats)
    wrong = sum(int((s.argmax(-1) != lab).sum()) for s, lab in zip(scores, labels))
    fer = 100.0 * wrong / max(sum(len(lab) for lab in labels), 1)
    return fer, 100.0 * phone_error_rate(scores, labels)


def checkpoint_path(model_path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".ckpt")


def _print(msg: str) -> None:
    print(msg, flush=True)


def train_speech(cfg: TrainConfig, out, resume: bool = False, progress: bool = True,
                 log=_print, threads: int | None = None) -> TrainResult:
    """Train a phone classifier; see the module docstring.

    Writes ``out`` (the best-dev-PER model, ``torch.save(model)``),
    ``out.ckpt`` (the last epoch: model, optimizer, RNG, history) and
    ``out.json`` (configuration and per-epoch history).
    """
    from tqdm import tqdm

    from deltarnn.models import RNNModel

    cfg.check()
    out = Path(out)
    if not out.parent.exists():
        raise TrainError(f"output directory {out.parent} does not exist")
    ckpt_file = checkpoint_path(out)
    if threads:
        torch.set_num_threads(threads)

    train_ds, train_utts = load_split(cfg.dataset, "train", cfg.max_utts)
    _, dev_utts = load_split(cfg.dataset, "dev", cfg.max_utts)
    feats = [u.features for u in train_utts]
    labels = [u.labels for u in train_utts]
    dev_feats = [u.features for u in dev_utts]
    dev_labels = [u.labels for u in dev_utts]

    torch.manual_seed(cfg.seed)
    model = RNNModel(cfg.cell, train_ds.feature_dim, cfg.hidden, cfg.layers, cfg.bidirectional,
                     train_ds.num_classes, output_delay=cfg.delay)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    result = TrainResult(str(out), str(ckpt_file))
    start = 0
    if resume:
        if not ckpt_file.exists():
            raise TrainError(f"--resume: no checkpoint {ckpt_file}")
        ck = torch.load(ckpt_file, map_location="cpu", weights_only=False)
        if ck["config"] != cfg.architecture():
            diff = {k: (ck["config"].get(k), v) for k, v in cfg.architecture().items() if ck["config"].get(k) != v}
            raise TrainError(f"--resume: checkpoint {ckpt_file} was made with other options "
                             f"(checkpoint, now): {diff}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        start = ck["epoch"] + 1
        result.history = ck["history"]
        result.best_dev_fer = ck["best_dev_fer"]
        result.best_epoch = ck["best_epoch"]
        log(f"resuming {out} after epoch {start} (best dev FER {result.best_dev_fer:.2f} % at epoch "
            f"{result.best_epoch + 1})")

    n_frames = sum(len(f) for f in feats)
    for epoch in range(start, cfg.epochs):
        lr = cfg.lr_at(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        t0 = time.perf_counter()
        batches = length_batches([len(f) for f in feats], cfg.batch, rng)
        total, seen = 0.0, 0
        bar = tqdm(batches, desc=f"{cfg.cell} epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False)
        for idx in bar:
            x, y, lengths = pad_batch([feats[i] for i in idx], [labels[i] for i in idx], cfg.delay)
            logits = forward_padded(model, x, lengths, cfg.dropout)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                               ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            if cfg.clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            n = int(lengths.sum())
            total += loss.item() * n
            seen += n
            bar.set_postfix(loss=f"{total / seen:.3f}")
        bar.close()
        fer, per = dev_scores(model, dev_feats, dev_labels)
        entry = {"epoch": epoch + 1, "loss": total / max(seen, 1), "dev_fer": fer, "dev_per": per, "lr": lr,
                 "seconds": time.perf_counter() - t0, "frames": n_frames}
        result.history.append(entry)
        improved = fer < result.best_dev_fer
        if improved:
            result.best_dev_fer, result.best_epoch = fer, epoch
            model.eval()
            _save(model, out)
        log(f"{cfg.cell} epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.3f}, dev FER {fer:.2f} %, "
            f"undecoded PER {per:.2f} %{' (best)' if improved else ''}, lr {lr:.2g}, {entry['seconds']:.0f} s")
        _save({"config": cfg.architecture(), "model": model.state_dict(), "optimizer": opt.state_dict(),
               "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "epoch": epoch,
               "history": result.history, "best_dev_fer": result.best_dev_fer,
               "best_epoch": result.best_epoch}, ckpt_file)
        write_atomically(str(out) + ".json", json.dumps(
            {"config": asdict(cfg), "history": result.history, "best_dev_fer": result.best_dev_fer,
             "best_epoch": result.best_epoch + 1}, indent=1).encode())
    if not out.exists():
        raise TrainError(f"no epoch was run: {out} was not written (--epochs {cfg.epochs} already done?)")
    return result
