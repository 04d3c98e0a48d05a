"""The fixed encoders on the CPU through ONNX Runtime.

The same weights, exported from PyTorch when a backbone loads (in memory, a few seconds) and run
by ONNX Runtime's CPU kernels: on a 2-core machine 3-4x PyTorch eager for EfficientNet-Lite0 and
1.3x for MiniLM and a ViT-B/32 image tower, with outputs within 1e-4 of PyTorch's (`benchmarks/encoders.py`
measures both paths in one run). PyTorch stays the path on a GPU and the reference (`--runtime torch`).
"""
import io
import warnings

import numpy as np
import torch

from utils.errors import StageError


def resolve_runtime(requested, device):
    """"auto": ONNX Runtime on the CPU where it is installed, PyTorch otherwise (and on a GPU)."""
    if requested == "torch" or (requested == "auto" and device.type != "cpu"):
        return "torch"
    if device.type != "cpu":
        raise StageError("--runtime onnxruntime runs on the CPU; on a GPU use --runtime torch (or auto)")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as error:
        if requested == "onnxruntime":
            raise StageError("--runtime onnxruntime needs `pip install onnxruntime onnx` (in requirements.txt)") from error
        return "torch"
    return "onnxruntime"


class OnnxModule:
    """A torch module exported to ONNX and run by ONNX Runtime on the CPU; called on tensors, it
    returns a list of tensors (one per output). Inputs named in `dynamic` may vary in those axes."""

    def __init__(self, module, example_inputs, input_names, output_names, dynamic, one_thread_per_call=False):
        """one_thread_per_call: each call runs on one thread and `map` runs calls side by side on
        as many threads as PyTorch uses (faster for small matrices, e.g. short sentences)."""
        import onnxruntime as ort

        buffer = io.BytesIO()
        # traced with gradients on: PyTorch's fused inference attention (taken under no_grad by
        # batch-first nn.MultiheadAttention, e.g. open_clip's) has no ONNX export; the plain one does
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on tracing and deprecation
            torch.onnx.export(module.eval(), tuple(example_inputs), buffer, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic, opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        self.threads = torch.get_num_threads()  # the same thread setting as PyTorch's
        options.intra_op_num_threads = 1 if one_thread_per_call else self.threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.input_names = list(input_names)
        self.one_thread_per_call = one_thread_per_call

    def __call__(self, *inputs):
        feeds = {name: np.ascontiguousarray(x.detach().cpu().numpy()) for name, x in zip(self.input_names, inputs)}
        return [torch.from_numpy(out) for out in self.session.run(None, feeds)]

    def map(self, calls):
        """self(*inputs) for each inputs in `calls`, side by side when one_thread_per_call (ONNX
        Runtime releases the GIL; one session serves concurrent calls with one copy of the weights)."""
        if not self.one_thread_per_call or self.threads == 1:
            return [self(*inputs) for inputs in calls]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda inputs: self(*inputs), calls))


def image_tower(module, resolution, outputs=("features",)):
    """An image encoder (images [B, 3, H, W] -> outputs) exported for any batch size."""
    example = torch.zeros(2, 3, resolution, resolution)
    return OnnxModule(module.float(), [example], ["images"], list(outputs), {"images": {0: "batch"}})


def in_chunks(function, images, size):
    """function over a batch in chunks of `size` rows, outputs concatenated (tuples per output).

    Small batches are faster on a CPU: the activations stay in cache."""
    parts = [function(part) for part in images.split(size)]
    if isinstance(parts[0], (list, tuple)):
        return [torch.cat(outputs) for outputs in zip(*parts)]
    return torch.cat(parts)
