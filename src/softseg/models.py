"""2D U-Net (Ronneberger et al. 2015) as used by SoftSeg; returns **logits**.

Architecture (SoftSeg paper, section 2.3, and its toolbox ivadomed):

* ``depth`` down-sampling steps (3 for the spinal cord, 4 for the brain in the papers);
* every convolution is 3x3 with padding 1, followed by batch normalisation, ReLU and dropout
  (``nn.Dropout2d``, 30 % by default: "dropout followed each convolution layer");
* ``width`` filters at full resolution, doubled at every level (``width * 2**depth`` at the
  bottom), 2x2 max pooling down, 2x2 transposed convolution up, skip connections by
  concatenation, a final 1x1 convolution to ``out_channels`` logits. The final activation is a
  named step of the candidate (:mod:`softseg.candidates`), not part of the network.

Any height and width are accepted: the input is padded (edge replication) up to the next
multiple of ``2**depth`` and the logits are cropped back, so the output always has the input's
spatial shape. (ivadomed instead interpolates the decoder to each skip size; padding keeps the
up-sampling an exact, deterministic transposed convolution.)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from softseg.errors import InputError

__all__ = ["UNet2D"]

_CONFIG_KEYS = ("in_channels", "out_channels", "depth", "width", "dropout", "batch_norm")


def _conv_block(in_ch: int, out_ch: int, *, dropout: float, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(
            nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batch_norm)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def _check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InputError(f"UNet2D: {name} must be an integer {bound}; got {value!r}")
    return value


class UNet2D(nn.Module):
    """2D U-Net returning logits.

    Parameters
    ----------
    in_channels : int
        Input channels (MRI contrasts), >= 1.
    out_channels : int
        Output channels (classes; 1 for a binary segmentation), >= 1.
    depth : int, keyword-only
        Number of 2x2 down-sampling steps, 1..6 (papers: 3 or 4).
    width : int, keyword-only
        Filters of the first level, >= 1.
    dropout : float, keyword-only
        Dropout probability after every convolution, in [0, 1).
    batch_norm : bool, keyword-only
        Batch normalisation after every convolution.

    Notes
    -----
    ``forward(x)`` takes ``x`` of shape (N, in_channels, H, W), float, any H and W >= 1, and
    returns logits of shape (N, out_channels, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        *,
        depth: int = 3,
        width: int = 32,
        dropout: float = 0.3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 1)
        _check_int("depth", depth, 1, 6)
        _check_int("width", width, 1)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0.0 <= dropout < 1.0
        ):
            raise InputError(f"UNet2D: dropout must be a number in [0, 1); got {dropout!r}")
        if not isinstance(batch_norm, bool):
            raise InputError(f"UNet2D: batch_norm must be true or false; got {batch_norm!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.width = width
        self.dropout = float(dropout)
        self.batch_norm = batch_norm

        opts = {"dropout": self.dropout, "batch_norm": batch_norm}
        channels = [width * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [
                _conv_block(in_channels if i == 0 else channels[i - 1], channels[i], **opts)
                for i in range(depth + 1)
            ]
        )
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(channels[i + 1], channels[i], 2, stride=2)
                for i in reversed(range(depth))
            ]
        )
        self.decoder = nn.ModuleList(
            [_conv_block(2 * channels[i], channels[i], **opts) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-able dict (for model files)."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "depth": self.depth,
            "width": self.width,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> UNet2D:
        """Build a network from :attr:`config`; unknown or missing keys: InputError."""
        if not isinstance(config, dict):
            raise InputError(f"UNet2D.from_config: expected a dict; got {type(config).__name__}")
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise InputError(
                f"UNet2D.from_config: unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(_CONFIG_KEYS)}"
            )
        if "in_channels" not in config:
            raise InputError("UNet2D.from_config: missing key 'in_channels'")
        options = {k: v for k, v in config.items() if k != "in_channels"}
        return cls(config["in_channels"], **options)

    @torch.no_grad()
    def init_output_bias(self, value: float) -> None:
        """Set the bias of every output channel (the final 1x1 convolution) to ``value``, in
        place; for a new network before training (:meth:`softseg.candidates.Candidate.init_network`).

        Raises
        ------
        InputError
            ``value`` is not a finite number.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"UNet2D: the output bias must be a finite number; got {value!r}")
        self.head.bias.fill_(float(value))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"UNet2D: expected input of shape (N, {self.in_channels}, H, W); "
                f"got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips), strict=True):
            x = block(torch.cat([skip, up(x)], dim=1))
        logits = self.head(x)
        if pad_h or pad_w:
            logits = logits[..., :height, :width]
        return logits
