"""Small layout and device-list parts shared by the Train and Predict docks.

The two docks do not import each other; what they build alike lives here: a labelled column of
magicgui widgets, a row of push buttons, the dock body in a scroll area, and the device combo
filled from :class:`napari_softseg._supervisor.DeviceProbe` (``"auto (…)"`` first, best device
first) once the probe has answered.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, Container
from qtpy.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

__all__ = ["button_row", "device_choices", "dock_body", "labelled", "show_devices"]


def labelled(*widgets: Any) -> Container:
    """A column of magicgui widgets with their labels, no margins."""
    box = Container(widgets=list(widgets), labels=True)
    box.margins = (0, 0, 0, 0)
    return box


def button_row(*buttons: Any) -> QWidget:
    """The push buttons (magicgui) side by side."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for button in buttons:
        layout.addWidget(button.native)
    return row


def dock_body() -> tuple[QWidget, QVBoxLayout]:
    """The widget that holds a dock's sections (put it in a scroll area) and its layout."""
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.setSpacing(4)
    return body, layout


def device_choices(devices: list[str] | None) -> list[tuple[str, str]]:
    """``(label, value)`` of a device combo: ``auto`` (the best device) first, then each device;
    while the probe has no answer (``None``), ``auto`` and ``cpu``."""
    if devices is None:
        return [("auto (looking for GPUs…)", "auto"), ("cpu", "cpu")]
    return [(f"auto ({devices[0]})", "auto")] + [(d, d) for d in devices]


def show_devices(combo: ComboBox, devices: list[str] | None) -> None:
    """Refill ``combo`` with :func:`device_choices`, keeping the user's choice when offered."""
    current = combo.value
    combo.native.clear()  # magicgui keeps old items first; the best device leads
    combo.choices = device_choices(devices)
    combo.value = current if current in combo.choices else "auto"
