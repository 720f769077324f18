"""ONNX export matches eager; onnxruntime's INT8 files hold int8 weights (the dynamo exporter takes seconds: slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labcli.edge import export, nets


@pytest.mark.slow
def test_onnx_parity_and_int8_files(tmp_path):
    model = nets.build("squeezenet", seed=0)
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    path = export.to_onnx(model, tmp_path / "m.onnx", x)
    sess = export.session(path)
    with torch.no_grad():
        ref = model(x).numpy()
    out = export.run_onnx(sess, x.numpy())  # batch 16 through a file exported at batch 2: the axis is dynamic
    assert np.abs(out - ref).max() < 1e-4 and (out.argmax(1) == ref.argmax(1)).all()
    assert export.onnx_int8_initializers(path)[0] == 0
    static = export.ort_static_int8(path, tmp_path / "s.onnx", x.numpy())
    ints, _ = export.onnx_int8_initializers(static)
    assert ints >= 10  # every conv's weight (and activation zero points)
    assert static.stat().st_size < 0.7 * path.stat().st_size
    q = export.run_onnx(export.session(static), x.numpy())
    assert np.abs(q - ref).max() < 0.1 * np.abs(ref).max()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "s.onnx"]  # atomic writes left no temp files
