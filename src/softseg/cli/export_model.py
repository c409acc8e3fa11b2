"""``softseg export-model MODEL --format onnx|torchscript -o PATH``: a portable network.

The model's network with its final activation (preprocessed axial slices (N, C, H, W) ->
probabilities (N, K, H, W), dynamic batch and spatial size) and its model card as metadata. The
file is checked against the PyTorch network before it is kept.
"""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "export a model file as ONNX or TorchScript (network + final activation, card as metadata)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model file written by softseg train (.safetensors)")
    parser.add_argument("--format", choices=("onnx", "torchscript"), required=True, help="onnx (onnxruntime, other runtimes) or torchscript (libtorch)")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="file to write: .onnx, or .pt/.ts for TorchScript")
    parser.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")


def run(args: argparse.Namespace) -> int:
    from softseg.interchange.export_model import export_model

    path = export_model(args.model, args.output, format=args.format, overwrite=args.overwrite, opset=args.opset)
    print(f"{path}: {args.format} network with its final activation and model card (checked against PyTorch)")
    return 0
