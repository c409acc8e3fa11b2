"""softseg.device: the one place that names and checks compute devices."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from softseg.device import available_devices, check_device_name, resolve_device
from softseg.errors import InputError


def test_available_devices_best_first_cpu_last():
    devices = available_devices()
    assert devices[-1] == "cpu"
    assert devices[:-1] == [f"cuda:{i}" for i in range(torch.cuda.device_count())] + (
        ["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else [])


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto == torch.device("cpu") or auto.type == "mps"
        with pytest.raises(InputError, match="CUDA is not available; use cpu or auto"):
            resolve_device("cuda:0")
    else:  # pragma: no cover - GPU machines
        n = torch.cuda.device_count()
        with pytest.raises(InputError, match=f"only {n} GPU"):
            resolve_device(f"cuda:{n}")
    for bad in ("gpu", "cuda:x", "CPU", "", "cuda:-1"):
        with pytest.raises(InputError, match="unknown device"):
            resolve_device(bad)
    assert check_device_name("cuda:3") == "cuda:3"


def test_importing_does_not_import_torch():
    code = "import sys, softseg.device, softseg.config, softseg.card; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
