"""Edge ML helpers for `lab bench edge`: small image nets built from config, INT8 quantization (torch.ao,
torchao, onnxruntime), pruning (magnitude, channel removal with torch-pruning), knowledge distillation,
export (ONNX, ExecuTorch .pte) and batch-1 latency.

    nets.py      SmallCNN (labcli.detect.vision), a MobileNetV3-small-style and a SqueezeNet-style net
    quantize.py  dynamic INT8 (torch.ao, torchao), static INT8 and QAT (torch.ao FX, x86 backend)
    prune.py     global L1 magnitude pruning (torch.nn.utils.prune), channel pruning (torch-pruning)
    distill.py   teacher -> student training on softened logits (Hinton et al. 2015)
    export.py    ONNX (torch.onnx dynamo exporter) + onnxruntime sessions and INT8, ExecuTorch (XNNPACK)
    timing.py    batch-1 latency percentiles over repeated rounds, parameter and file-size counts
"""
