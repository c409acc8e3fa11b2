"""Compute devices: which ones torch can use here, and a device name checked into a ``torch.device``.

One module for the trainer, prediction, the CLI and the napari widgets (issue 12). Device names
are torch's own: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, plus ``"auto"`` = the best one
available (CUDA, then Apple MPS, then CPU).

Importing this module does not import torch; the functions do.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from softseg.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["DEVICE_PATTERN", "available_devices", "check_device_name", "resolve_device"]

#: Device names accepted in configurations (availability is checked by :func:`resolve_device`).
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
_DEVICE_RE = re.compile(DEVICE_PATTERN)
_HINT = "use auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices torch can use on this machine, best first.

    Returns
    -------
    list of str
        ``"cuda:0"``, ``"cuda:1"``, ... (one per visible GPU), ``"mps"`` (Apple silicon), and
        always ``"cpu"`` last.
    """
    import torch

    out = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    out.append("cpu")
    return out


def check_device_name(name: str) -> str:
    """Return ``name`` if it is a device name softseg accepts (without checking availability).

    Raises
    ------
    InputError
        Not one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
    """
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise InputError(f"unknown device {name!r}; {_HINT}")
    return name


def resolve_device(name: str = "auto") -> torch.device:
    """The ``torch.device`` for a device name, checked against what this machine has.

    Parameters
    ----------
    name : str
        ``"auto"`` (CUDA if available, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    InputError
        Unknown name, CUDA/MPS not available, or a CUDA index beyond the visible GPUs.
    """
    import torch

    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available; use cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(
                f"device {name!r} requested but only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})"
            )
    if device.type == "mps" and not _mps_available():
        raise InputError(f"device {name!r} requested but Apple MPS is not available; use cpu or auto")
    return device
