"""The one base class of a user's mistakes, and the library errors that mean one."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``deltarnn`` prints it in one line, without a traceback."""


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean "the user's input is wrong" (imported only when a command runs)."""
    from deltarnn.device.driver import DeviceError
    from deltarnn.device.image import DeviceFitError
    from deltarnn.device.link import LinkError
    from deltarnn.models import UnsupportedModelError
    from deltarnn.quant.golden import EmulationError
    from deltarnn.quant.qmodel import QModelFormatError
    from deltarnn.quant.quantizer import QuantizationError
    return (UserError, EmulationError, UnsupportedModelError, QModelFormatError, QuantizationError,
            DeviceFitError, DeviceError, LinkError)
