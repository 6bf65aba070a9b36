"""Board wrappers: the board's oscillator through a PLL, a reset synchroniser and the USB-serial pins.

:class:`~deltarnn.hw.top.BoardTop` is the accelerator behind two serial
pins, independent of any board. Each wrapper here puts it on one board:

- :class:`ICEBreakerTop` (iCE40 UP5K): the 12 MHz oscillator on pin 35 feeds
  an ``SB_PLL40_PAD``; the serial line is the FT2232H's second channel
  (amaranth-boards' ``uart`` 0: rx pin 6, tx pin 9); the green LED shows the
  PLL locked and the reset released, the red LED serial activity.
- :class:`ULX3STop` (ECP5 LFE5U-85F): the 25 MHz oscillator (pin G2) feeds an
  ``EHXPLLL``; the serial line is the FT231X (``uart`` 0: rx M1, tx L4, the
  board's USB port "US1"); LED 0 shows ready, LED 1 serial activity.

Both hold the ``sync`` domain in reset until the PLL has locked and then for
:data:`POR_CYCLES` more cycles (iCE40 block RAMs read zeros for a few
microseconds after configuration), released synchronously
(:class:`amaranth.lib.cdc.ResetSynchronizer`).

The PLL dividers come from :func:`ice40_pll` and :func:`ecp5_pll`, which
accept only frequencies the PLL makes exactly (the UART's baud divisor is
computed from the nominal clock) and say which nearby ones it can make.
:data:`BOARDS` holds each board's oscillator, default clock, baud rate and
core (:mod:`deltarnn.fpga.build` builds them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from amaranth import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer

from deltarnn.spec.memory_map import DeviceParams

__all__ = ["BOARDS", "BoardSpec", "Ice40PLL", "Ecp5PLL", "PLLError", "ice40_pll", "ecp5_pll",
           "ICEBreakerTop", "ULX3STop", "CLOCK_NET", "POR_CYCLES", "ACTIVITY_BITS"]

#: Cycles the reset is held after the PLL locks.
POR_CYCLES = 255
#: Width of the activity LEDs' stretch counter: a serial edge lights the LED for 2 ** ACTIVITY_BITS cycles.
ACTIVITY_BITS = 20


class PLLError(ValueError):
    """The PLL cannot make the frequency asked for (the message names nearby ones it can)."""


def _mhz(hz) -> str:
    return f"{float(hz) / 1e6:g} MHz"


def _nearby(options, target_hz, count=4) -> str:
    picks = sorted(set(options), key=lambda f: (abs(f - target_hz), f))[:count]
    return ", ".join(_mhz(f) for f in sorted(picks))


# --- iCE40 ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ice40PLL:
    """Dividers of an iCE40 ``SB_PLL40_*`` in simple feedback: ``f_out = f_in * (divf + 1) / ((divr + 1) * 2 ** divq)``.

    Attributes
    ----------
    divr, divf, divq : int
        ``DIVR`` (0-15), ``DIVF`` (0-127), ``DIVQ`` (1-6).
    filter_range : int
        ``FILTER_RANGE`` for the phase detector's frequency (as ``icepll``).
    f_in_hz, f_pfd_hz, f_vco_hz, f_out_hz : float
    """

    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in_hz: float
    f_pfd_hz: float
    f_vco_hz: float
    f_out_hz: float


#: Operating ranges of the iCE40 PLL (iCE40 sysCLOCK PLL guide, as ``icepll``), Hz.
ICE40_PFD = (10e6, 133e6)
ICE40_VCO = (533e6, 1066e6)
ICE40_OUT = (16e6, 275e6)


def _ice40_filter(f_pfd: float) -> int:
    mhz = f_pfd / 1e6
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if mhz < limit:
            return value
    return 6


def ice40_pll(f_in_hz: float, f_out_hz: float) -> Ice40PLL:
    """The iCE40 PLL settings that make exactly ``f_out_hz`` from ``f_in_hz``.

    Among exact solutions the one with the highest phase-detector frequency
    (least jitter) is taken.

    Raises
    ------
    PLLError
        If ``f_out_hz`` is outside 16-275 MHz or no divider setting makes it
        exactly; the message lists the nearest frequencies that can be made.
    """
    f_in, target = Fraction(f_in_hz), Fraction(f_out_hz)
    found, made = [], []
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not ICE40_PFD[0] <= f_pfd <= ICE40_PFD[1]:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not ICE40_VCO[0] <= f_vco <= ICE40_VCO[1]:
                continue
            for divq in range(1, 7):
                f_out = f_vco / (1 << divq)
                if not ICE40_OUT[0] <= f_out <= ICE40_OUT[1]:
                    continue
                made.append(f_out)
                if f_out == target:
                    found.append(Ice40PLL(divr, divf, divq, _ice40_filter(f_pfd), float(f_in), float(f_pfd),
                                          float(f_vco), float(f_out)))
    if not found:
        raise PLLError(f"the iCE40 PLL cannot make {_mhz(f_out_hz)} from {_mhz(f_in_hz)} (it makes 16-275 MHz "
                       f"in steps of its dividers); nearest: {_nearby(made, target)}")
    return max(found, key=lambda p: (p.f_pfd_hz, -p.divq))


# --- ECP5 -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ecp5PLL:
    """Dividers of an ECP5 ``EHXPLLL`` with CLKOP as feedback: ``f_out = f_in * clkfb_div / clki_div``.

    Attributes
    ----------
    clki_div, clkfb_div, clkop_div : int
        ``CLKI_DIV`` (1-128), ``CLKFB_DIV`` (1-80), ``CLKOP_DIV`` (1-128; ``f_vco = f_out * clkop_div``).
    f_in_hz, f_pfd_hz, f_vco_hz, f_out_hz : float
    """

    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in_hz: float
    f_pfd_hz: float
    f_vco_hz: float
    f_out_hz: float


#: Operating ranges of the ECP5 PLL (ECP5 sysCLOCK guide, as ``ecppll``), Hz.
ECP5_PFD = (3.125e6, 400e6)
ECP5_VCO = (400e6, 800e6)
ECP5_OUT = (3.125e6, 400e6)


def ecp5_pll(f_in_hz: float, f_out_hz: float) -> Ecp5PLL:
    """The ECP5 PLL settings that make exactly ``f_out_hz`` from ``f_in_hz``.

    Among exact solutions the one with the highest phase-detector frequency
    and a VCO nearest 600 MHz (mid-range) is taken.

    Raises
    ------
    PLLError
        If no divider setting makes ``f_out_hz`` exactly; the message lists the nearest ones.
    """
    f_in, target = Fraction(f_in_hz), Fraction(f_out_hz)
    found, made = [], []
    for clki in range(1, 129):
        f_pfd = f_in / clki
        if not ECP5_PFD[0] <= f_pfd <= ECP5_PFD[1]:
            continue
        for clkfb in range(1, 81):
            f_out = f_pfd * clkfb
            if not ECP5_OUT[0] <= f_out <= ECP5_OUT[1]:
                continue
            ops = [op for op in range(1, 129) if ECP5_VCO[0] <= f_out * op <= ECP5_VCO[1]]
            if not ops:
                continue
            made.append(f_out)
            if f_out == target:
                op = min(ops, key=lambda o: abs(f_out * o - 600_000_000))
                found.append(Ecp5PLL(clki, clkfb, op, float(f_in), float(f_pfd), float(f_out * op), float(f_out)))
    if not found:
        raise PLLError(f"the ECP5 PLL cannot make {_mhz(f_out_hz)} from {_mhz(f_in_hz)}; nearest: "
                       f"{_nearby(made, target)}")
    return max(found, key=lambda p: (p.f_pfd_hz, -abs(p.f_vco_hz - 600e6)))


# --- the wrappers ---------------------------------------------------------------------------------------

#: Name of the ``sync`` clock net, which the files of ``constraints/`` constrain.
CLOCK_NET = "sync_clk"


def _clock_net():
    # The PLL's output. The attribute makes Yosys keep this name for the net (among equal names it
    # prefers those with attributes), so that the constraint files can name it.
    return Signal(name=CLOCK_NET, attrs={"keep": 1})


class _BoardWrapper(Elaboratable):
    # The part every board shares: the reset after lock, BoardTop on the serial pins, the LEDs.
    # Subclasses make the PLL in _pll(m, platform) and return (clock, locked).

    def __init__(self, params: DeviceParams, clock_hz: int, baud: int, max_payload: int | None = None):
        from deltarnn.hw.top import BoardTop

        self.params, self.clock_hz, self.baud = params, int(clock_hz), int(baud)
        self.pll = self.pll_config(self.clock_hz)       # raises PLLError before anything is elaborated
        kwargs = {} if max_payload is None else {"max_payload": max_payload}
        self.top = BoardTop(params, self.clock_hz, self.baud, **kwargs)   # checks the baud divisor

    def elaborate(self, platform):
        m = Module()
        clk, locked = self._pll(m, platform)

        m.domains.sync = cd_sync = ClockDomain("sync")
        m.d.comb += cd_sync.clk.eq(clk)
        # Reset: held while the PLL is unlocked and POR_CYCLES after, released in step with the clock.
        # (The counter and the lock synchroniser are in the sync domain, but untouched by its reset.)
        locked_s = Signal(reset_less=True)
        m.submodules.lock_sync = FFSynchronizer(locked, locked_s, reset_less=True)
        count = Signal(range(POR_CYCLES + 1), reset_less=True)
        ready = Signal()
        with m.If(~locked_s):
            m.d.sync += count.eq(0)
        with m.Elif(~ready):
            m.d.sync += count.eq(count + 1)
        m.d.comb += ready.eq(count == POR_CYCLES)
        m.submodules.reset_sync = ResetSynchronizer(~ready, domain="sync")

        m.submodules.board = top = self.top
        uart = platform.request("uart", 0, dir="-")     # rx, tx (and the ULX3S's unused rts, dtr)
        m.submodules.rx_buf = rx = io.FFBuffer("i", uart.rx)
        # (the tx pin's flip-flop starts low: until the PLL locks the host may read one 0x00 byte or a
        # break, which its frame parser skips like any garbage before a reply's sync byte)
        m.submodules.tx_buf = tx = io.FFBuffer("o", uart.tx)
        rx_s = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(rx.i, rx_s, init=1)   # the pin's flip-flop, then one more
        m.d.comb += [top.rx.eq(rx_s), tx.o.eq(top.tx)]

        # LEDs: ready; activity (any low serial bit stretched to 2 ** ACTIVITY_BITS cycles).
        leds = self._leds(platform)
        if leds:
            stretch = Signal(ACTIVITY_BITS)
            with m.If(~rx_s | ~top.tx):
                m.d.sync += stretch.eq(-1)
            with m.Elif(stretch != 0):
                m.d.sync += stretch.eq(stretch - 1)
            m.submodules.led_ready = led_ready = io.Buffer("o", leds[0])
            m.submodules.led_activity = led_activity = io.Buffer("o", leds[1])
            m.d.comb += [led_ready.o.eq(ready), led_activity.o.eq(stretch != 0)]
        return m

    def _leds(self, platform):
        return []


class ICEBreakerTop(_BoardWrapper):
    """:class:`~deltarnn.hw.top.BoardTop` on the iCEBreaker (iCE40 UP5K).

    Parameters
    ----------
    params : DeviceParams
        The core.
    clock_hz : int
        The ``sync`` clock, made by ``SB_PLL40_PAD`` from the 12 MHz oscillator
        (:func:`ice40_pll` must make it exactly).
    baud : int
        The serial rate; ``clock_hz / baud`` must be a whole number of cycles
        per bit (:func:`deltarnn.hw.uart.divisor_for`).
    max_payload : int, optional
        The longest request payload (default: the protocol's).

    Pins: ``clk12`` (pin 35, into the PLL's pad), ``uart`` 0 (FT2232H channel
    B: rx 6, tx 9), ``led_g`` 0 (ready) and ``led_r`` 0 (serial activity).

    Raises
    ------
    PLLError
        If the PLL cannot make ``clock_hz``.
    ValueError
        If the clock cannot make the baud rate.
    """

    F_IN_HZ = 12_000_000

    @classmethod
    def pll_config(cls, clock_hz):
        return ice40_pll(cls.F_IN_HZ, clock_hz)

    def _pll(self, m, platform):
        pin = platform.request("clk12", 0, dir="-")
        clk, locked = _clock_net(), Signal()
        p = self.pll
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq, p_FILTER_RANGE=p.filter_range,
            i_PACKAGEPIN=pin.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        return clk, locked

    def _leds(self, platform):
        return [platform.request("led_g", 0, dir="-"), platform.request("led_r", 0, dir="-")]


class ULX3STop(_BoardWrapper):
    """:class:`~deltarnn.hw.top.BoardTop` on the ULX3S (ECP5 LFE5U-85F).

    Parameters
    ----------
    params : DeviceParams
        The core.
    clock_hz : int
        The ``sync`` clock, made by ``EHXPLLL`` from the 25 MHz oscillator
        (:func:`ecp5_pll` must make it exactly).
    baud : int
        The serial rate (a whole number of cycles per bit).
    max_payload : int, optional
        The longest request payload (default: the protocol's).

    Pins: ``clk25`` (G2), ``uart`` 0 (the FT231X on USB port US1: rx M1,
    tx L4), ``led`` 0 (ready) and ``led`` 1 (serial activity).

    Raises
    ------
    PLLError
        If the PLL cannot make ``clock_hz``.
    ValueError
        If the clock cannot make the baud rate.
    """

    F_IN_HZ = 25_000_000

    @classmethod
    def pll_config(cls, clock_hz):
        return ecp5_pll(cls.F_IN_HZ, clock_hz)

    def _pll(self, m, platform):
        m.submodules.clk25 = clk25 = io.Buffer("i", platform.request("clk25", 0, dir="-"))
        clk, locked = _clock_net(), Signal()
        p = self.pll
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div, p_CLKOP_CPHASE=p.clkop_div - 1,
            p_CLKOP_FPHASE=0,
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            i_CLKI=clk25.i, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1,
            i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=clk, o_LOCK=locked)
        return clk, locked

    def _leds(self, platform):
        return [platform.request("led", 0, dir="-"), platform.request("led", 1, dir="-")]


# --- the boards' defaults -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoardSpec:
    """A board :mod:`deltarnn.fpga.build` builds for.

    Attributes
    ----------
    name : str
        The ``--board`` name, also a key of :data:`deltarnn.fpga.synth.BOARDS`.
    wrapper : type
        :class:`ICEBreakerTop` or :class:`ULX3STop`.
    clock_hz : int
        Default ``sync`` clock (met by the default build, see ``docs/boards.md``).
    baud : int
        Default serial rate.
    params : DeviceParams
        The default core.
    limits : dict
        The largest ``lanes``, ``max_input``, ``max_hidden``, ``max_layers``
        and ``max_classes`` accepted for this board.
    constraints : str
        The file in ``constraints/`` every build for the board applies.
    synth_opts : tuple of str
        Extra Yosys options.
    yosys_script : callable
        ``yosys_script(params)``: the Yosys commands after reading the design
        of a build of ``params`` (:mod:`deltarnn.fpga.harness`'s, ``{top}``
        being the module that holds the core).
    """

    name: str
    wrapper: type
    clock_hz: int
    baud: int
    params: DeviceParams
    limits: dict = field(default_factory=dict)
    constraints: str = ""
    synth_opts: tuple[str, ...] = ()
    yosys_script: Callable[[DeviceParams], tuple[str, ...]] = lambda params: ()
    description: str = ""


def _boards() -> dict[str, BoardSpec]:
    from deltarnn.fpga.harness import acc_bits_for, ecp5_yosys_script, ice40_yosys_script

    def core(cell, lanes, layers, hidden, inputs, classes):
        return DeviceParams(cell, lanes=lanes, max_input=inputs, max_hidden=hidden, max_layers=layers,
                            max_classes=classes, wmem_bits=4, abits=8,
                            acc_bits=acc_bits_for(inputs, hidden, 4, 8))

    return {
        "icebreaker": BoardSpec(
            "icebreaker", ICEBreakerTop, 18_000_000, 3_000_000, core("gru", 2, 1, 8, 8, 4),
            limits={"lanes": 8, "max_input": 64, "max_hidden": 128, "max_layers": 2, "max_classes": 64},
            constraints="icebreaker.pcf", synth_opts=("-spram",),
            yosys_script=ice40_yosys_script,
            description="iCEBreaker (iCE40 UP5K)"),
        "ulx3s-85f": BoardSpec(
            "ulx3s-85f", ULX3STop, 60_000_000, 3_000_000, core("gru", 32, 2, 256, 40, 40),
            limits={"lanes": 64, "max_input": 512, "max_hidden": 512, "max_layers": 4, "max_classes": 256},
            constraints="ulx3s-85f.lpf", yosys_script=ecp5_yosys_script,
            description="ULX3S (ECP5 LFE5U-85F)"),
    }


#: The boards, by ``--board`` name.
BOARDS: dict[str, BoardSpec] = _boards()
