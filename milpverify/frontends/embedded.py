"""The networks shipped with the package, by name: `"default"` or `"default:NAME"`.

`load_onnx("default")` and the CLI's `MODEL` argument both resolve names here; the files
live in `milpverify/data/` (sources and licences in its README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from milpverify.errors import InvalidInputError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True)
class EmbeddedNet:
    """An ONNX network shipped with the package and the pixel divisor its inputs need."""

    file: str
    pixel_divisor: float
    description: str

    @property
    def path(self) -> Path:
        """Absolute path of the ONNX file."""
        return DATA_DIR / self.file


EMBEDDED_NETS: dict[str, EmbeddedNet] = {
    "planet_lenet": EmbeddedNet(
        "planet_lenet.onnx",
        256.0,
        "Planet LeNet (R. Ehlers; ONNX by D. Shriver, dnnv-benchmarks; MIT): conv-maxpool-FC8-FC10",
    ),
    "mnist_mlp_32_16": EmbeddedNet(
        "mnist_mlp_32_16.onnx",
        255.0,
        "MLP 784-32-16-10 trained by benchmarks/make_embedded_default.py on MNIST test 2000-9999",
    ),
}
#: The README's first command runs on this one: exact rho finishes on all 10 images,
#: while Planet LeNet's MaxPool needs hundreds of binaries (8/10 time out at 60 s).
DEFAULT_NET = "mnist_mlp_32_16"


def embedded_net(name: str = DEFAULT_NET) -> EmbeddedNet:
    """The embedded network `name` (see `EMBEDDED_NETS`).

    Raises
    ------
    InvalidInputError
        Unknown name, or the file is missing from the installation.
    """
    if name not in EMBEDDED_NETS:
        raise InvalidInputError(
            f"Unknown embedded network {name!r}; choose one of {sorted(EMBEDDED_NETS)}."
        )
    net = EMBEDDED_NETS[name]
    if not net.path.is_file():
        raise InvalidInputError(
            f"Embedded network file {str(net.path)!r} is missing; "
            "reinstall milpverify or run benchmarks/make_embedded_default.py."
        )
    return net


def default_name(model: str) -> str | None:
    """The embedded network a model argument names (`"default"`, `"default:NAME"`), else None.

    Example
    -------
    >>> default_name("default"), default_name("default:planet_lenet"), default_name("a.onnx")
    ('mnist_mlp_32_16', 'planet_lenet', None)
    """
    if model == "default" or model.startswith("default:"):
        return model.partition(":")[2] or DEFAULT_NET
    return None
