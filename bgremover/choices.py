"""The names users choose among (engines, precisions, output formats), apart from the code behind them.

The command line lists these in its options and `--help`; keeping them here, free of torch and
Pillow, lets `rmbg --help` answer at once instead of loading PyTorch first.
"""

ENGINES = ("auto", "torch", "openvino")
ENGINE_HELP = "auto (OpenVINO for RMBG-1.4 on a CPU if installed, else PyTorch), torch, openvino (docs/engines.md)"
PRECISION_HELP = (
    "auto (fp16 on CUDA; bf16 on CPUs with native bf16, else fp32), fp32, fp16, bf16, "
    "int8 (CPU, opt-in: BiRefNet's linear layers on PyTorch, IS-Net's convolutions on OpenVINO; docs/engines.md)"
)
# What a removal makes: the subject with alpha, the mask, the subject over a colour or over an image.
OUTPUTS = ("cutout", "mask", "color", "image")
# Those a photo alone suffices for ("image" needs a background picture too): the HTTP API's and bench's.
PHOTO_ONLY_OUTPUTS = tuple(output for output in OUTPUTS if output != "image")
OUTPUT_FORMATS = ("png", "webp", "jpeg")
# How hard the lossless formats compress: "fast" to write (the default), "small" files.
COMPRESSIONS = ("fast", "small")

# Buffers every network computes from its shape when it is built: checkpoints need not carry them,
# and neither loading nor ONNX import takes them from a file.
DERIVED_BUFFERS = ("relative_position_index", "num_batches_tracked")
