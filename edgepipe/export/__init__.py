"""NanoDet-Plus checkpoint → ONNX → OpenVINO IR (FP16, optional INT8), verified against PyTorch.

Needs the `export` extra (torch, onnx, nncf); those are imported only when an export runs, so this
package imports without them. `model.py` and `checkpoint.py` import torch directly.
"""

from __future__ import annotations

from edgepipe.export.arch import ARCHS, COCO_LABELS, SIZES, ArchSpec
from edgepipe.export.convert import ExportRequest, ExportResult, Parity, export

__all__ = ["ARCHS", "COCO_LABELS", "SIZES", "ArchSpec", "ExportRequest", "ExportResult", "Parity", "export"]
