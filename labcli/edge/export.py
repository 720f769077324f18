"""Export for deployment: ONNX (torch.onnx's dynamo exporter) run by onnxruntime, onnxruntime's own INT8
(dynamic: MatMul/Gemm weights; static: QDQ int8 weights per channel, uint8 activations calibrated on images),
and ExecuTorch `.pte` lowered to XNNPACK. Files are written atomically (labcli.runs)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labcli import runs

INPUT = "image"


def to_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """fp32 ONNX with a dynamic batch axis (input `image`, output `logits`). The exporter's per-node metadata
    (source stack traces, about a quarter of a small model's file) is dropped: a deployed file does not ship it."""
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (example[:2],), dynamo=True, input_names=[INPUT], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
    proto = program.model_proto
    for node in proto.graph.node:
        del node.metadata_props[:]
    return runs.write_with(Path(path), lambda tmp: onnx.save_model(proto, str(tmp)))


def session(path: Path, threads: int = 1):
    """An onnxruntime CPU session on `threads` threads (intra- and inter-op), full graph optimization."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {INPUT: x})[0]


def ort_dynamic_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    return runs.write_with(Path(dst), lambda tmp: quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8))


class _Images:
    """onnxruntime's CalibrationDataReader protocol over a batch of images."""

    def __init__(self, images: np.ndarray, batch: int = 32):
        self.batches = iter([{INPUT: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.batches, None)


def ort_static_int8(src: Path, dst: Path, calibration: np.ndarray) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            pre = Path(scratch) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(tmp), _Images(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)

    return runs.write_with(Path(dst), write)


def onnx_int8_initializers(path: Path) -> tuple[int, int]:
    """(int8/uint8 initializers, float initializers with more than 16 values) in an ONNX file."""
    import onnx

    model = onnx.load(str(path))
    ints = sum(t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for t in model.graph.initializer)
    floats = sum(t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 16 for t in model.graph.initializer)
    return ints, floats


def to_pte(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """ExecuTorch program (batch 1), every supported op delegated to XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(model.eval(), (example[:1],))
        buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    runs.write_bytes(Path(path), buffer)
    return Path(path)


def pte_method(path: Path, threads: int = 1):
    """The `forward` of a .pte, with ExecuTorch's (XNNPACK's) thread pool set to `threads`."""
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    return Runtime.get().load_program(Path(path)).load_method("forward")


def run_pte(method, x: torch.Tensor) -> torch.Tensor:
    return method.execute([x])[0]
