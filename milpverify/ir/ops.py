"""Canonical ops of the milpverify IR (numpy and scipy.sparse only).

Every node's value is a batch of *flat* C-order vectors; `shape` records how the
flat vector unflattens (without the batch axis). Each op lists its inputs by node
name, in argument order. Single-input linear ops expose one sparse/dense linear map
`y = M x + b` (`LinearOp.linear_map`), which every analysis shares; only the
forward pass and the torch compiler care about their structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Union

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Matrix = Union[FloatArray, sp.csr_array]


def size_of(shape: tuple[int, ...]) -> int:
    """Number of elements of a tensor of `shape`."""
    return int(np.prod(shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class Op:
    """Base of all IR ops: ordered input node names and the output shape."""

    inputs: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of scalar outputs (neurons) of this op."""
        return size_of(self.shape)

    @property
    def kind(self) -> str:
        """Short lower-case op name used in summaries and solver names."""
        return type(self).__name__.lower()


@dataclass(frozen=True, eq=False)
class Input(Op):
    """The network input (no inputs of its own)."""


@dataclass(frozen=True, eq=False)
class LinearOp(Op):
    """A single-input op computing `y = M x + b` on flat vectors."""

    @cached_property
    def linear_map(self) -> tuple[Matrix, FloatArray]:
        """`(M, b)`: M is (size, in_size), dense ndarray or `scipy.sparse.csr_array`."""
        return self._build_map()

    def _build_map(self) -> tuple[Matrix, FloatArray]:
        raise NotImplementedError

    @cached_property
    def transposed(self) -> Matrix:
        """`M^T` as a dense array or CSR (cached), for backward passes `G M = (M^T G^T)^T`."""
        matrix = self.linear_map[0]
        return matrix.T if isinstance(matrix, np.ndarray) else sp.csr_array(matrix.T)

    @property
    def in_size(self) -> int:
        """Number of elements of the (single) input."""
        return int(self.linear_map[0].shape[1])

    @property
    def num_parameters(self) -> int:
        """Number of trainable-looking parameters (weights + biases) the op stores."""
        return 0


@dataclass(frozen=True, eq=False)
class Affine(LinearOp):
    """Dense affine layer `y = W x + b` (ONNX Gemm / MatMul+Add, torch Linear); W is (out, in)."""

    weight: FloatArray
    bias: FloatArray

    def _build_map(self) -> tuple[Matrix, FloatArray]:
        return self.weight, self.bias

    @property
    def num_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)


@dataclass(frozen=True, eq=False)
class Conv(LinearOp):
    """2-D convolution on a (C, H, W) input.

    `weight` is (O, C/group, kh, kw); `pads` is (top, left, bottom, right) with zero
    padding; `strides` and `dilations` are (sh, sw) and (dh, dw).
    """

    in_shape: tuple[int, int, int]
    weight: FloatArray
    bias: FloatArray
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    group: int

    def _build_map(self) -> tuple[Matrix, FloatArray]:
        out_c, cg, kh, kw = self.weight.shape
        _, oh, ow = self.shape
        o, y, x, c, i, j = np.meshgrid(
            np.arange(out_c), np.arange(oh), np.arange(ow),
            np.arange(cg), np.arange(kh), np.arange(kw), indexing="ij")
        in_c = (o // (out_c // self.group)) * cg + c
        iy = y * self.strides[0] - self.pads[0] + i * self.dilations[0]
        ix = x * self.strides[1] - self.pads[1] + j * self.dilations[1]
        vals = self.weight[o, c, i, j]
        rows = (o * oh + y) * ow + x
        matrix = _window_matrix(rows, in_c, iy, ix, vals, self.in_shape, self.size)
        return matrix, np.repeat(self.bias, oh * ow)

    @property
    def num_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)


@dataclass(frozen=True, eq=False)
class AvgPool(LinearOp):
    """2-D average pooling; padded cells count iff `count_include_pad`."""

    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    count_include_pad: bool

    def _build_map(self) -> tuple[Matrix, FloatArray]:
        rows, ch, iy, ix = _pool_windows(self.in_shape, self.shape, self.kernel, self.strides,
                                         self.pads, (1, 1))
        ones = np.ones(rows.shape, dtype=np.float64)
        inside = _inside(iy, ix, self.in_shape)
        if self.count_include_pad:
            # cells inside the *padded* input count (ceil-mode overhang does not)
            _, h, w = self.in_shape
            top, left, bottom, right = self.pads
            padded = (iy >= -top) & (iy < h + bottom) & (ix >= -left) & (ix < w + right)
            ones /= padded.sum(axis=-1, keepdims=True)
        else:
            ones /= inside.sum(axis=-1, keepdims=True)
        return _window_matrix(rows, ch, iy, ix, ones, self.in_shape, self.size), np.zeros(self.size)


@dataclass(frozen=True, eq=False)
class Scale(LinearOp):
    """Element-wise affine by constants, `y = scale * x + shift` (flat arrays).

    Input normalisation (Sub/Div/Mul/Add by constants) and BatchNormalization in
    eval mode become this op.
    """

    scale: FloatArray
    shift: FloatArray

    def _build_map(self) -> tuple[Matrix, FloatArray]:
        return sp.csr_array(sp.diags_array(self.scale)), self.shift


@dataclass(frozen=True, eq=False)
class Permute(LinearOp):
    """Re-indexing `y[k] = x[index[k]]` (Flatten, Reshape, Transpose, Squeeze).

    `source_size` is the input's number of elements (the index may skip some).
    """

    index: IntArray
    source_size: int

    def _build_map(self) -> tuple[Matrix, FloatArray]:
        n = self.size
        matrix = sp.csr_array((np.ones(n), (np.arange(n), self.index)),
                              shape=(n, self.source_size))
        return matrix, np.zeros(n)

    @property
    def is_identity(self) -> bool:
        """True if the op only renames the shape (a C-order Flatten/Reshape)."""
        return self.source_size == self.size and bool(
            np.array_equal(self.index, np.arange(self.size)))


@dataclass(frozen=True, eq=False)
class Relu(Op):
    """Rectified linear unit, `y = max(x, 0)`."""


@dataclass(frozen=True, eq=False)
class LeakyRelu(Op):
    """`y = x` for `x >= 0`, `y = slope * x` below (ONNX LeakyRelu, PRelu); `slope` is flat.

    Piecewise linear with one breakpoint at 0, like `Relu` (slope 0): one binary per unstable
    neuron encodes it exactly. A slope above 1 makes it concave instead of convex.
    """

    slope: FloatArray


#: Element-wise ops with one breakpoint at 0: their phase is the sign of their input, and
#: ReLU-like analyses (unstable neurons, binaries, fixed-phase regions) apply to them.
SIGN_SPLIT: tuple[type[Op], ...] = (Relu, LeakyRelu)


@dataclass(frozen=True, eq=False)
class MaxPool(Op):
    """2-D max pooling; padded cells are -inf, i.e. simply absent from a window."""

    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]

    @cached_property
    def windows(self) -> IntArray:
        """(size, kh*kw) flat input indices of each output's window; -1 marks padding."""
        _, ch, iy, ix = _pool_windows(self.in_shape, self.shape, self.kernel, self.strides,
                                      self.pads, self.dilations)
        _, h, w = self.in_shape
        flat = (ch * h + iy) * w + ix
        return np.where(_inside(iy, ix, self.in_shape), flat, -1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Add(Op):
    """Sum of two tensors of the same shape (residual connections)."""


@dataclass(frozen=True, eq=False)
class Concat(Op):
    """Concatenation: `y = concatenate(flat inputs)[index]`."""

    index: IntArray


def _inside(iy: IntArray, ix: IntArray, in_shape: tuple[int, int, int]) -> npt.NDArray[np.bool_]:
    return (iy >= 0) & (iy < in_shape[1]) & (ix >= 0) & (ix < in_shape[2])


def _window_matrix(rows: IntArray, ch: IntArray, iy: IntArray, ix: IntArray, vals: FloatArray,
                   in_shape: tuple[int, int, int], n_out: int) -> sp.csr_array:
    """Sparse matrix with `vals` at (rows, flat(ch, iy, ix)); out-of-image cells are zero padding."""
    keep = _inside(iy, ix, in_shape) & (vals != 0)
    _, h, w = in_shape
    cols = (ch * h + iy) * w + ix
    return sp.csr_array((vals[keep], (rows[keep], cols[keep])),
                        shape=(n_out, size_of(in_shape)))


def _pool_windows(in_shape: tuple[int, int, int], out_shape: tuple[int, ...],
                  kernel: tuple[int, int], strides: tuple[int, int],
                  pads: tuple[int, int, int, int], dilations: tuple[int, int]
                  ) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Row, channel, y, x index arrays of shape (out_size, kh*kw) for a pooling window."""
    c, oh, ow = out_shape
    ch, y, x, i, j = np.meshgrid(np.arange(c), np.arange(oh), np.arange(ow),
                                 np.arange(kernel[0]), np.arange(kernel[1]), indexing="ij")
    iy = y * strides[0] - pads[0] + i * dilations[0]
    ix = x * strides[1] - pads[1] + j * dilations[1]
    rows = (ch * oh + y) * ow + x
    k = kernel[0] * kernel[1]
    return (rows.reshape(-1, k), ch.reshape(-1, k), iy.reshape(-1, k), ix.reshape(-1, k))


def conv_output_hw(in_hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                   pads: tuple[int, int, int, int], dilations: tuple[int, int],
                   ceil_mode: bool = False) -> tuple[int, int]:
    """Output (H, W) of a conv/pool window sweep (ONNX formula)."""
    out = []
    for axis in range(2):
        span = in_hw[axis] + pads[axis] + pads[axis + 2] - dilations[axis] * (kernel[axis] - 1) - 1
        steps = -(-span // strides[axis]) if ceil_mode else span // strides[axis]
        size = int(steps) + 1
        # ONNX/torch drop a ceil-mode window that would start inside the end padding.
        if ceil_mode and (size - 1) * strides[axis] >= in_hw[axis] + pads[axis]:
            size -= 1
        out.append(size)
    return out[0], out[1]


ALL_OPS: tuple[type[Op], ...] = (Input, Affine, Conv, AvgPool, Scale, Permute, Relu, LeakyRelu,
                                 MaxPool, Add, Concat)
