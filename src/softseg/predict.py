"""Soft prediction of whole volumes in their native geometry.

:func:`predict_volume` applies a trained model (:mod:`softseg.modelfile`) to a 3D image exactly
as the training data were prepared (:mod:`softseg.data`): reorientation to the display order
(axial slices), resampling to the training spacing (spline order 2), per-contrast z-score; the
network then sees **whole** axial slices (the U-Net is fully convolutional, so nothing outside a
training crop is lost), in batches of slices; the probabilities are resampled back to the native
grid with linear interpolation and reoriented to the file's own axis order. The result is float32
in [0, 1] with the input's shape, ready to save with the input's affine.

K-class models (DESIGN decision 11; the contract in docs/training.md) give the class maps
``(K+1, X, Y, Z)``, background first: the network's K foreground maps are resampled like a
single-class map, clipped to [0, 1] (a voxel whose classes sum above 1 by rounding is rescaled),
and background is ``1 - their sum``, so background + classes sum to 1 within 1e-5 at every voxel
(a voxel where the multi-class normalized ReLU gives 0 to every class, no evidence for any class,
is background). :func:`class_labels` is their argmax label map.

Memory stays bounded: the network runs on chunks of slices whose size adapts to the device (a
budget per batch estimated from the slice size and network width), so only the input, its
preprocessed copy and the output volume are held in full.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from softseg.data import preprocess_image, resample
from softseg.errors import InputError
from softseg.geometry import DisplayGeometry
from softseg.io import Volume

__all__ = [
    "PredictionCancelled",
    "auto_batch_size",
    "class_labels",
    "predict_volume",
]

#: Bytes of live activations per pixel and first-level filter of a U-Net forward pass without
#: gradients (skip maps, current map, convolution output, concatenation), a measured bound.
_BYTES_PER_PIXEL_FILTER = 4 * 8
_CPU_BUDGET = 384 * 1024**2


class PredictionCancelled(Exception):
    """Raised by :func:`predict_volume` when its ``cancel`` check says stop."""


def auto_batch_size(
    slice_shape: Sequence[int], width: int, *, device: Any = "cpu", limit: int = 64
) -> int:
    """Slices per forward pass for a slice of *slice_shape* (rows, cols) and U-Net *width*.

    CPU: a fixed activation budget (384 MiB). CUDA: half of the free device memory. The result
    lies in ``[1, limit]``.
    """
    import torch

    per_slice = int(np.prod(slice_shape)) * int(width) * _BYTES_PER_PIXEL_FILTER
    device = torch.device(device)
    budget = _CPU_BUDGET
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = free // 2
    return int(max(1, min(limit, budget // max(1, per_slice))))


def _as_channels(volume: Any, affine: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(C, X, Y, Z) float32 array and its affine from the accepted input forms."""
    if isinstance(volume, Volume):
        return np.asarray(volume.array, dtype=np.float32)[None], volume.affine
    if isinstance(volume, (list, tuple)) and volume and all(isinstance(v, Volume) for v in volume):
        ref = volume[0]
        for v in volume[1:]:
            if v.shape != ref.shape or not np.allclose(v.affine, ref.affine, atol=1e-3, rtol=1e-5):
                raise InputError(
                    f"channel images disagree in shape or affine ({v.path or 'array'} vs {ref.path or 'array'}); "
                    "resample them onto one grid"
                )
        return np.stack([np.asarray(v.array, dtype=np.float32) for v in volume]), ref.affine
    arr = np.asarray(volume)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"expected a numeric image; got dtype {arr.dtype}")
    if affine is None:
        raise InputError("give the voxel-to-world affine of an array input (affine=...), or pass a Volume")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"expected an image of shape (X, Y, Z) or (C, X, Y, Z); got {arr.shape}")
    return arr.astype(np.float32, copy=False), np.asarray(affine, dtype=np.float64)


def predict_volume(
    model: Any,
    volume: Volume | Sequence[Volume] | np.ndarray,
    *,
    affine: np.ndarray | None = None,
    device: Any = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
    forward: Callable[[np.ndarray], np.ndarray] | None = None,
    maps: int | None = None,
) -> np.ndarray:
    """Soft prediction of a whole volume, in the input's native geometry.

    Parameters
    ----------
    model : LoadedModel or path-like
        A model file or what :func:`softseg.modelfile.load_model` returned.
    volume : Volume, sequence of Volume (one per channel) or ndarray
        The image in file axis order: a :class:`~softseg.io.Volume`, one Volume per input
        channel (in the model's channel order), or an array (X, Y, Z) / (C, X, Y, Z) with
        ``affine``.
    affine : ndarray (4, 4), optional
        Voxel-to-world transform of an array input.
    device : str or torch.device, optional
        Default ``"auto"`` (:func:`softseg.device.resolve_device`: CUDA, then MPS, then CPU).
    batch_size : int, optional
        Slices per forward pass; default adapts to the slice size and device memory
        (:func:`auto_batch_size`).
    progress : callable(done, total), optional
        Called after each batch with the number of slices done.
    cancel : callable returning bool, or object with ``is_set()``, optional
        Checked before each batch; when it says stop, :class:`PredictionCancelled` is raised.
    forward : callable, optional
        Replaces the network and its final activation: given preprocessed slices
        (N, C, H, W) float32 it returns probabilities (N, M, H, W) float32 (e.g. an exported ONNX
        or TorchScript model, issue 16), M = 1 for a single-class model, K+1 (background first)
        or K for a K-class model; everything else (geometry, resampling, normalisation,
        batching) is unchanged. The model file still supplies the card.
    maps : int, optional
        With ``forward``: it returns exactly ``maps`` per-voxel maps (N, maps, H, W) that are
        returned resampled and reoriented as they are, shape (maps, X, Y, Z), with no class
        handling or clipping (e.g. :mod:`softseg.uncertainty`'s mean / variance / entropy stack).

    Returns
    -------
    ndarray, float32 in [0, 1]
        Single class: shape (X, Y, Z) of the input, the probability (before thresholding; the
        model's threshold is ``card.threshold``). K classes: shape (K+1, X, Y, Z), class
        probabilities with background at index 0, summing to 1 within 1e-5 at every voxel
        (class k's threshold is ``card.thresholds[k - 1]``; :func:`class_labels` gives the
        argmax).

    Raises
    ------
    InputError
        Channel count different from the model's, bad shapes, an empty (zero-size) image,
        non-finite values, a resampled volume larger than the available memory, a network
        output that is not finite (never returned as a probability map) or that has another
        number of channels than the card's classes.
    PredictionCancelled
    """
    import torch

    from softseg.data import resampled_shape
    from softseg.device import resolve_device
    from softseg.io import check_memory
    from softseg.modelfile import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    card = loaded.card
    prep = loaded.preprocessing
    arr, aff = _as_channels(volume, affine)
    if arr.shape[0] != len(prep.channels):
        raise InputError(
            f"the model expects {len(prep.channels)} input channel(s) ({', '.join(prep.channels)}) "
            f"but got {arr.shape[0]} image(s); give one image per channel in that order"
        )
    if 0 in arr.shape:
        raise InputError(f"the image is empty (shape {tuple(arr.shape[1:])}); nothing to predict")
    if not np.isfinite(arr).all():
        raise InputError("image contains NaN/Inf voxels; fix the image before predicting")
    geom = DisplayGeometry.from_affine(aff, arr.shape[1:])
    spacing = geom.scale
    target = resampled_shape(geom.display_shape, spacing, prep.spacing)
    n_target = int(np.prod(target, dtype=np.int64))
    k = len(card.classes)
    # preprocessed channels (float32) + their resampling buffer + the output slices of each class
    n_maps = int(maps) if maps else (k if k > 1 else 0)
    check_memory(4 * n_target * (2 * len(prep.channels) + max(n_maps, 1)),
                 what=f"resampling to the model's spacing {_mm(prep.spacing)} ({' x '.join(map(str, target))} voxels)")
    disp = geom.to_display(arr)  # (C, S, H, W)
    del arr
    images = preprocess_image(disp, spacing, prep, crop=False)  # (C, S', H', W')
    native_shape = disp.shape[1:]
    del disp
    dev = resolve_device("auto") if device is None else (
        resolve_device(device) if isinstance(device, str) else torch.device(device))
    n_slices = images.shape[1]
    bs = int(batch_size) if batch_size else auto_batch_size(
        images.shape[2:], card.architecture.config.width, device=dev)
    if bs < 1:
        raise InputError(f"batch size must be >= 1; got {batch_size}")
    if forward is None:
        net = loaded.model.to(dev).eval()
        # the activation stored in the card (not today's registry entry of the candidate)
        activate = loaded.activation
        amp = dev.type == "cuda"

        def forward(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(x).to(dev)
            with torch.autocast(dev.type, enabled=amp):
                logits = net(t)
            return activate(logits.float()).cpu().numpy()

    # the foreground maps: (S', H', W') for one class, (K, S', H', W') for K classes
    out = np.empty(((n_maps,) if n_maps else ()) + (n_slices,) + images.shape[2:], dtype=np.float32)
    check = _cancel_check(cancel)
    with torch.inference_mode():
        for start in range(0, n_slices, bs):
            if check():
                raise PredictionCancelled("prediction cancelled")
            stop = min(n_slices, start + bs)
            x = np.ascontiguousarray(np.moveaxis(images[:, start:stop], 0, 1))
            probs = np.asarray(forward(x))
            m = probs.shape[1] if probs.ndim == 4 else -1
            if maps and m == n_maps:
                out[:, start:stop] = np.moveaxis(probs, 1, 0)
            elif maps or m not in ((1,) if k == 1 else (k, k + 1)):
                raise InputError(
                    f"the network gives {m} output channel(s) but the model card lists {k} class(es) "
                    f"({', '.join(card.classes)}); expected {'1' if k == 1 else f'{k + 1} (background first) or {k}'}"
                )
            elif k == 1:
                out[start:stop] = probs[:, 0]
            else:
                out[:, start:stop] = np.moveaxis(probs[:, m - k:], 1, 0)
            if progress is not None:
                progress(stop, n_slices)
    del images
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InputError(
            f"the network produced NaN/Inf for {bad} of {out.size} voxels; the model "
            f"({loaded.path or 'in memory'}) is broken or the image is far outside its training range"
        )
    back = resample(out, native_shape, order=1) if out.shape[-3:] != tuple(native_shape) else out
    if maps:
        return geom.from_display(back).astype(np.float32, copy=False)
    np.clip(back, 0.0, 1.0, out=back)
    if k > 1:
        back = _with_background(back)
    return geom.from_display(back).astype(np.float32, copy=False)


def _with_background(foreground: np.ndarray) -> np.ndarray:
    """(K, ...) class maps in [0, 1] -> (K+1, ...) with background ``1 - sum`` first; voxels
    whose classes sum above 1 (linear resampling rounds) are rescaled to sum 1."""
    total = foreground.sum(axis=0, dtype=np.float64)
    over = total > 1.0
    if over.any():
        foreground[:, over] /= total[over].astype(np.float32)
        total[over] = 1.0
    out = np.empty((foreground.shape[0] + 1,) + foreground.shape[1:], dtype=np.float32)
    out[1:] = foreground
    out[0] = np.clip(1.0 - total, 0.0, 1.0)
    return out


def class_labels(probabilities: np.ndarray) -> np.ndarray:
    """The argmax label map of a K-class prediction: 0 = background, k = class k.

    Parameters
    ----------
    probabilities : ndarray, shape (K+1, *spatial), float
        What :func:`predict_volume` returns for a K-class model (background first).

    Returns
    -------
    ndarray, shape (*spatial), uint8
        The most probable class of each voxel; ties go to the lower index (background first),
        as :func:`softseg.metrics.class_argmax` decides everywhere in softseg.

    Raises
    ------
    InputError
        Fewer than two class maps, or more than 255 classes.
    """
    from softseg.metrics import class_argmax

    p = np.asarray(probabilities)
    if p.ndim < 2 or p.shape[0] < 2:
        raise InputError(f"class_labels: expected class maps (K+1, *spatial), background first; got shape {p.shape}")
    if p.shape[0] > 256:
        raise InputError(f"class_labels: {p.shape[0] - 1} classes do not fit a uint8 label map (at most 255)")
    return class_argmax(p)[0].astype(np.uint8, copy=False)


def _mm(spacing: Sequence[float | None]) -> str:
    return "(" + ", ".join("native" if s is None else f"{s:g}" for s in spacing) + ") mm"


def _cancel_check(cancel: Any) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return lambda: bool(cancel.is_set())
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a callable or have is_set()")
