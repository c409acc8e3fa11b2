"""Model files -> portable networks: ONNX and TorchScript (``softseg export-model``).

The exported network is the model's U-Net **followed by its final activation** (normalized ReLU,
multi-class normalized ReLU, sigmoid or softmax, by the name stored in the model file, from
:mod:`softseg.activations`), so it maps what the network sees to probabilities:

``slices``         input, float32, shape (N, C, H, W): N axial slices (any N >= 1), the C channels
                   in the model's channel order, any H, W >= 1 — the image reoriented to the
                   display order, resampled to the model's spacing and z-scored per channel
                   (the model card's ``preprocessing``; :func:`softseg.predict.predict_volume`
                   does exactly this)
``probabilities``  output, float32, shape (N, K, H, W), values in [0, 1]

The batch and spatial sizes are dynamic. The model card (the model file's softseg metadata, plus
an ``export`` section) travels inside the file: ONNX ``metadata_props`` key ``"softseg"``
(JSON) with a few flat keys (``softseg.threshold``, ``softseg.channels``, ...); TorchScript
``_extra_files["softseg.json"]``. :func:`read_exported_card` reads it back from either.

How
---
* ONNX: :func:`torch.onnx.export` with the dynamo exporter (``torch.export`` + onnxscript,
  ``dynamo=True``); batch, height and width are declared with ``torch.export.Dim.DYNAMIC`` and
  renamed ``batch``/``height``/``width`` in the graph. The U-Net pads H and W up to a multiple
  of ``2**depth`` and crops its logits back; the exporter keeps that arithmetic symbolic, so one
  file serves every size.
* TorchScript: :func:`torch.jit.trace` on an example whose height and width are *not*
  multiples of ``2**depth`` (the tracer records the padding arithmetic as size operations; an
  example that needed no padding would bake "no padding" in). ``torch.jit`` is deprecated in
  favour of ``torch.export``; TorchScript is still what C++/libtorch deployments load, so its
  deprecation warnings are silenced here.
* Every export **checks itself** before the file is kept: the exported network (onnxruntime on
  CPU for ONNX, ``torch.jit.load`` for TorchScript) and the PyTorch network must agree within
  :data:`EXPORT_TOLERANCE` on two inputs of other sizes (a batch of 3 with a size that needs
  padding, a batch of 1 with one that does not); otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from softseg.errors import InputError

__all__ = [
    "EXPORT_TOLERANCE",
    "FORMATS",
    "SUFFIXES",
    "export_model",
    "onnx_forward",
    "portable_network",
    "read_exported_card",
    "torchscript_forward",
]

FORMATS = ("onnx", "torchscript")
#: Accepted file suffixes per format.
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".ts", ".torchscript")}
#: Largest absolute difference of probabilities allowed between the exported and the PyTorch
#: network in the self-check (float32 arithmetic in another order differs by ~1e-7).
EXPORT_TOLERANCE = 1e-4
#: Key of the model card in ONNX metadata_props / name of the TorchScript extra file.
CARD_KEY = "softseg"
EXTRA_FILE = "softseg.json"
INPUT_NAME, OUTPUT_NAME = "slices", "probabilities"


def portable_network(loaded: Any) -> Any:
    """The model's network followed by its final activation, as one ``torch.nn.Module``.

    Parameters
    ----------
    loaded : LoadedModel
        From :func:`softseg.modelfile.load_model`; the activation is the one its card names
        (``card.candidate.activation``), not today's registry entry of the candidate.

    Returns
    -------
    torch.nn.Module in eval mode
        ``forward(x)``: (N, C, H, W) float32 -> (N, K, H, W) probabilities.
    """
    import torch

    activate = loaded.activation

    class PortableNetwork(torch.nn.Module):
        """U-Net logits -> the candidate's final activation (DESIGN 5: networks return logits)."""

        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return activate(self.net(x))

    return PortableNetwork(loaded.model).eval()


def _card(loaded: Any, fmt: str, opset: int | None) -> dict[str, Any]:
    """The model card as JSON-able dict, with an ``export`` section describing the file."""
    import torch

    from softseg import __version__

    card = loaded.card
    doc = card.model_dump(mode="json")
    doc["export"] = {
        "format": fmt,
        "input": {"name": INPUT_NAME, "shape": ["batch", len(card.channels), "height", "width"], "dtype": "float32",
                  "meaning": "axial slices after the card's preprocessing (display orientation SPL, resampled to "
                             "preprocessing.spacing, z-score per channel), channels in the card's channel order"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", card.architecture.config.out_channels, "height", "width"],
                   "dtype": "float32", "meaning": "probabilities in [0, 1] after the final activation "
                                                  f"{card.candidate.activation.name!r}"},
        "source_model": None if loaded.path is None else str(loaded.path),
        "softseg_version": __version__,
        "torch_version": torch.__version__,
        "opset": opset,
    }
    return doc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, deprecation and tracer warnings, and log lines."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _example(loaded: Any, batch: int, pad: bool, seed: int) -> Any:
    import torch

    m = 2 ** int(loaded.card.architecture.config.depth)
    h, w = (2 * m + 1, m + 3) if pad else (2 * m, 3 * m)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, len(loaded.channels), h, w, generator=gen)


def _rename_dims(model: Any) -> None:
    """Name the dynamic dims of the graph's input/output batch, height, width (everywhere)."""
    graph = model.graph
    inp = graph.input[0].type.tensor_type.shape.dim
    mapping = {inp[i].dim_param: name for i, name in ((0, "batch"), (2, "height"), (3, "width")) if inp[i].dim_param}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in mapping:
                dim.dim_param = mapping[dim.dim_param]


def _export_onnx(net: Any, example: Any, card: dict[str, Any], tmp: Path, opset: int | None) -> None:
    import onnx
    import torch
    from torch.export import Dim

    dims = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    with _quiet():
        program = torch.onnx.export(
            net, (example,), dynamo=True, dynamic_shapes=({**dims},), input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], opset_version=opset, external_data=False, verbose=False,
        )
    proto = program.model_proto
    _rename_dims(proto)
    flat = {
        CARD_KEY: json.dumps(card, allow_nan=False),
        f"{CARD_KEY}.classes": json.dumps(card["classes"]),
        f"{CARD_KEY}.thresholds": json.dumps(card["thresholds"]),
        f"{CARD_KEY}.channels": json.dumps(card["channels"]),
        f"{CARD_KEY}.activation": str(card["candidate"]["activation"]["name"]),
        f"{CARD_KEY}.preprocessing": json.dumps(card["preprocessing"]),
    }
    onnx.helper.set_model_props(proto, flat)
    proto.doc_string = "softseg model: axial slices (N, C, H, W) -> probabilities (N, K, H, W); card in metadata_props['softseg']"
    onnx.checker.check_model(proto)
    onnx.save_model(proto, os.fspath(tmp))


def _export_torchscript(net: Any, example: Any, card: dict[str, Any], tmp: Path) -> None:
    import torch

    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(net, (example,), check_trace=False)
        torch.jit.save(traced, os.fspath(tmp), _extra_files={EXTRA_FILE: json.dumps(card, allow_nan=False)})


def onnx_forward(path: str | os.PathLike, *, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A forward function running an exported ONNX file in onnxruntime (CPU).

    Parameters
    ----------
    path : path-like
        A file written by :func:`export_model` with ``format="onnx"``.
    threads : int, optional
        onnxruntime intra-op threads (default: its own choice).

    Returns
    -------
    callable
        ``forward(x)``: (N, C, H, W) float32 ndarray -> (N, K, H, W) float32 probabilities.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("running ONNX files needs onnxruntime: pip install 'napari-softseg[export]'") from None
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"{path}: onnxruntime cannot load this file ({' '.join(str(exc).split())[:200]})") from None
    name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return forward


def torchscript_forward(path: str | os.PathLike) -> Callable[[np.ndarray], np.ndarray]:
    """A forward function running an exported TorchScript file with ``torch.jit.load`` (CPU).

    Returns
    -------
    callable
        ``forward(x)``: (N, C, H, W) float32 ndarray -> (N, K, H, W) float32 probabilities.
    """
    import torch

    with _quiet():
        module = torch.jit.load(os.fspath(path), map_location="cpu").eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return forward


def read_exported_card(path: str | os.PathLike) -> dict[str, Any]:
    """The model card stored in an exported ONNX or TorchScript file.

    Raises
    ------
    InputError
        Not a file written by :func:`export_model` (no card).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load_model(os.fspath(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        text = props.get(CARD_KEY)
    else:
        import torch

        extra = {EXTRA_FILE: ""}
        with _quiet():
            torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra)
        text = extra[EXTRA_FILE] or None
    if not text:
        raise InputError(f"{path}: no softseg model card inside (not written by softseg export-model)")
    from softseg.schema import loads_json

    return loads_json(text, source=f"{path} (model card)")


def export_model(
    model: str | os.PathLike | Any,
    path: str | os.PathLike,
    *,
    format: str = "onnx",  # noqa: A002 - the CLI option's name
    overwrite: bool = False,
    opset: int | None = None,
) -> Path:
    """Write a model file's network and final activation as ONNX or TorchScript, with its card.

    Parameters
    ----------
    model : path-like or LoadedModel
        A softseg model file (``.safetensors``).
    path : path-like
        Output file: ``.onnx`` for ONNX; ``.pt``, ``.ts`` or ``.torchscript`` for TorchScript.
    format : {"onnx", "torchscript"}
    overwrite : bool
        Replace an existing file.
    opset : int, optional
        ONNX opset (default: the exporter's).

    Returns
    -------
    Path
        The written file (written atomically, only after the self-check passed).

    Raises
    ------
    InputError
        Unknown format, a suffix that does not fit it, an existing file without ``overwrite``,
        a bad model file, onnx/onnxruntime missing.
    RuntimeError
        The exported network disagrees with the PyTorch one by more than
        :data:`EXPORT_TOLERANCE` (a bug; nothing is written).
    """
    import torch

    from softseg.io import atomic_path, check_writable
    from softseg.modelfile import LoadedModel, load_model

    if format not in FORMATS:
        raise InputError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.name.lower().endswith(SUFFIXES[format]):
        raise InputError(f"{path}: a {format} file should end in {' or '.join(SUFFIXES[format])}")
    check_writable(path, overwrite=overwrite)
    if format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise InputError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'napari-softseg[export]'") from None
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    net = portable_network(loaded)
    card = _card(loaded, format, opset)
    checks = [_example(loaded, 3, True, 1), _example(loaded, 1, False, 2)]
    with torch.no_grad():
        expected = [net(x).numpy() for x in checks]
    with atomic_path(path, overwrite=overwrite) as tmp:
        example = _example(loaded, 2, True, 0)
        if format == "onnx":
            _export_onnx(net, example, card, tmp, opset)
            forward = onnx_forward(tmp)
        else:
            _export_torchscript(net, example, card, tmp)
            forward = torchscript_forward(tmp)
        for x, want in zip(checks, expected):
            got = forward(x.numpy())
            if got.shape != want.shape or not np.allclose(got, want, atol=EXPORT_TOLERANCE, rtol=0):
                diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
                raise RuntimeError(
                    f"the exported {format} network disagrees with PyTorch on input {tuple(x.shape)} "
                    f"(shape {got.shape} vs {want.shape}, max |diff| {diff:.3g}); nothing written"
                )
    return path
