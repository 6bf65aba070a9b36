"""A second, literal implementation of docs/datapath.md in plain Python ints.

Element by element, step by step, with the accumulators updated one delta at
a time exactly as the hardware does. It shares nothing with deltarnn.quant.golden but
the QModel data and the activation tables (which are data of the contract),
and Python ints never wrap, so any overflow in the vectorised golden model
shows up as a difference.
"""

from __future__ import annotations

from deltarnn.spec.contract import FX_BITS, FX_FRAC, LUT_ADDR_BITS, LUT_SHIFT, SIGMOID_TABLE, TANH_TABLE

ONE = 1 << FX_FRAC


def rsh(v: int, s: int) -> int:
    return v if s == 0 else (v + (1 << (s - 1))) >> s


def sat(v: int, bits: int = FX_BITS) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def symq(v: int, bits: int) -> int:
    m = (1 << (bits - 1)) - 1
    return max(-m, min(m, v))


def mul(a: int, b: int) -> int:
    return sat(rsh(a * b, FX_FRAC))


def lut(table, kind: str, x: int) -> int:
    n = 1 << LUT_ADDR_BITS
    return int(table[max(0, min(n - 1, (x >> LUT_SHIFT[kind]) + n // 2))])


def sig(x: int) -> int:
    return lut(SIGMOID_TABLE, "sigmoid", x)


def th(x: int) -> int:
    return lut(TANH_TABLE, "tanh", x)


class Encoder:
    """Delta encoder of one vector with its reference."""

    def __init__(self, n: int, theta: int):
        self.ref = [0] * n
        self.theta = theta

    def __call__(self, q: list[int]) -> list[tuple[int, int]]:
        out = []
        for j, v in enumerate(q):
            d = v - self.ref[j]
            if abs(d) > self.theta:
                out.append((j, d))
                self.ref[j] = v
        return out


class MxV:
    """Accumulators of one matrix, updated one delta (one column) at a time."""

    def __init__(self, m):
        self.w = [[int(v) for v in row] for row in m.weights]
        self.mult = [int(v) for v in m.mult]
        self.shift = int(m.shift)
        self.acc = [0] * len(self.w)

    def add(self, deltas) -> None:
        for j, d in deltas:
            for r in range(len(self.w)):
                self.acc[r] += self.w[r][j] * d

    def fx(self) -> list[int]:
        return [sat(rsh(a * self.mult[r], self.shift)) for r, a in enumerate(self.acc)]


def quant_fx(h: list[int], act) -> list[int]:
    return [symq(rsh(v * act.mult, act.shift), act.bits) for v in h]


def run_direction(qm, li: int, d, qx_seq: list[list[int]]) -> list[list[int]]:
    """One direction of layer ``li`` over one sequence of x-path integers."""
    layer = qm.layers[li]
    hs = qm.hidden_size
    enc_x = Encoder(len(qx_seq[0]), layer.x_act.theta)
    mx = MxV(d.x)
    mh = MxV(d.h) if d.h is not None else None
    enc_h = Encoder(hs, layer.h_act.theta) if d.h is not None else None
    hw_acc = [0] * len(qx_seq[0])
    h, c = [0] * hs, [0] * hs
    v = {k: [int(e) for e in arr] for k, arr in d.vectors.items()}
    out = []
    for q in qx_seq:
        dx = enc_x(q)
        mx.add(dx)
        for j, dd in dx:
            hw_acc[j] += dd
        px = mx.fx()
        if mh is not None:
            mh.add(enc_h(quant_fx(h, layer.h_act)))
            ph = mh.fx()
        nh, nc = [0] * hs, [0] * hs
        for k in range(hs):
            if qm.cell == "lstm":
                pre = [sat(px[g * hs + k] + ph[g * hs + k] + v["bias"][g * hs + k]) for g in range(4)]
                i, f, g, o = sig(pre[0]), sig(pre[1]), th(pre[2]), sig(pre[3])
                nc[k] = sat(mul(f, c[k]) + mul(i, g))
                nh[k] = mul(o, th(nc[k]))
            elif qm.cell == "gru":
                r = sig(sat(px[k] + ph[k] + v["bias"][k]))
                z = sig(sat(px[hs + k] + ph[hs + k] + v["bias"][hs + k]))
                nx = sat(px[2 * hs + k] + v["bias"][2 * hs + k])
                nhh = sat(ph[2 * hs + k] + v["bias_hn"][k])
                n = th(sat(nx + mul(r, nhh)))
                nh[k] = sat(mul(ONE - z, n) + mul(z, h[k]))
            elif qm.cell == "ligru":
                a = sat(px[k] + ph[k] + v["bias"][k])
                z = sig(sat(px[hs + k] + ph[hs + k] + v["bias"][hs + k]))
                nh[k] = sat(mul(z, h[k]) + mul(ONE - z, max(a, 0)))
            else:
                f = sig(sat(px[hs + k] + mul(v["vf"][k], c[k]) + v["bias"][k]))
                r = sig(sat(px[2 * hs + k] + mul(v["vr"][k], c[k]) + v["bias"][hs + k]))
                nc[k] = sat(mul(f, c[k]) + mul(ONE - f, px[k]))
                if d.highway is not None:
                    hw = sat(rsh(hw_acc[k] * d.highway[0], d.highway[1]))
                else:
                    hw = px[3 * hs + k]
                nh[k] = sat(mul(r, nc[k]) + mul(ONE - r, hw))
        h, c = nh, nc
        out.append(h)
    return out


def run(qm, x_q_first_layer: list[list[list[int]]]) -> list[list[list[int]]]:
    """Run a QModel on already quantized first-layer inputs ``[batch][time][features]``."""
    results = []
    for seq in x_q_first_layer:
        q_seq = seq
        values = None
        for li, layer in enumerate(qm.layers):
            if li > 0:
                q_seq = [quant_fx(hv, layer.x_act) for hv in values]
            outs = []
            for j, d in enumerate(layer.directions):
                if j == 0:
                    outs.append(run_direction(qm, li, d, q_seq))
                else:
                    outs.append(run_direction(qm, li, d, q_seq[::-1])[::-1])
            values = [sum((o[t] for o in outs), []) for t in range(len(q_seq))]
        if qm.head is not None:
            enc = Encoder(len(values[0]), qm.head.act.theta)
            m = MxV(qm.head.matrix)
            ys = []
            for hv in values:
                m.add(enc(quant_fx(hv, qm.head.act)))
                ys.append([sat(a + int(b)) for a, b in zip(m.fx(), qm.head.bias)])
            values = ys
        results.append(values)
    return results
