"""Simplification passes: make a network alternate linear ops and piecewise-linear activations.

Each pass is a rule `(net_nodes, name) -> bool` applied until nothing changes:
- `drop_identity`: a C-order Flatten/Reshape (identity `Permute`) disappears.
- `diagonal_conv_to_scale`: a 1x1 stride-1 unpadded Conv with diagonal channel weights
  (the ERAN convSmall input normalisation) becomes a `Scale`.
- `fold_scale`: a `Scale` (normalisation, BatchNorm) merges into the Affine/Conv/Scale
  before or after it, when that is exact (per-channel constants; no zero padding after a shift).
- `fold_permute`: a `Permute` merges into the `Affine` that consumes it.
- `fold_affine_pair`: two consecutive `Affine`s merge when the product is not larger.
- `fold_pad`: a zero padding (depthwise 1x1 identity Conv, what an ONNX `Pad` becomes) merges
  into the padding of the Conv or AvgPool that consumes it, when that is exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from milpverify.ir import ops
from milpverify.ir.network import Network
from milpverify.ir.ops import Op


class _Graph:
    """Mutable view of a network's nodes used by the passes."""

    def __init__(self, net: Network) -> None:
        self.nodes: dict[str, Op] = dict(net.items())
        self.output = net.output
        self.notes: list[str] = []

    def consumers(self, name: str) -> list[str]:
        return [n for n, op in self.nodes.items() if name in op.inputs]

    def sole_consumer(self, name: str) -> str | None:
        users = self.consumers(name)
        if len(users) == 1 and name != self.output:
            return users[0]
        return None

    def bypass(self, name: str) -> None:
        """Remove single-input node `name`, wiring its consumers to its input."""
        source = self.nodes[name].inputs[0]
        for user in self.consumers(name):
            op = self.nodes[user]
            self.nodes[user] = dataclasses.replace(
                op, inputs=tuple(source if a == name else a for a in op.inputs))
        if self.output == name:
            self.output = source
        del self.nodes[name]


def drop_identity(g: _Graph, name: str) -> bool:
    """Identity permutations carry no computation (ops read flat C-order inputs)."""
    op = g.nodes[name]
    if not (isinstance(op, ops.Permute) and op.is_identity):
        return False
    if name == g.output and isinstance(g.nodes[op.inputs[0]], ops.Input):
        return False
    g.bypass(name)
    return True


def diagonal_conv_to_scale(g: _Graph, name: str) -> bool:
    """A 1x1 conv mixing no channels is the per-channel affine map `w[c,c] x + b[c]`."""
    op = g.nodes[name]
    if not (isinstance(op, ops.Conv) and op.weight.shape[2:] == (1, 1)
            and op.strides == (1, 1) and op.pads == (0, 0, 0, 0)
            and op.shape == op.in_shape):
        return False
    w = op.weight[:, :, 0, 0]
    if op.group == 1:
        if not np.array_equal(w, np.diag(np.diag(w))):
            return False
        diag = np.diag(w)
    elif op.group == op.in_shape[0] and w.shape[1] == 1:
        diag = w[:, 0]
    else:
        return False
    hw = op.shape[1] * op.shape[2]
    g.nodes[name] = ops.Scale(op.inputs, op.shape, np.repeat(diag, hw), np.repeat(op.bias, hw))
    g.notes.append(f"1x1 conv {name!r} is a per-channel scale (input normalisation)")
    return True


def _per_channel(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The per-channel constants of a flat (C, H, W) array, or None if they vary in space."""
    if len(shape) != 3:
        return None
    grid = values.reshape(shape[0], -1)
    return grid[:, 0] if np.all(grid == grid[:, :1]) else None


def _scale_after(prev: Op, scale: ops.Scale) -> Op | None:
    """`s * (M x + b) + t` as one op of prev's kind, or None if not expressible."""
    s, t = scale.scale, scale.shift
    if isinstance(prev, ops.Affine):
        return dataclasses.replace(prev, weight=prev.weight * s[:, None], bias=prev.bias * s + t)
    if isinstance(prev, ops.Scale):
        return dataclasses.replace(prev, scale=prev.scale * s, shift=prev.shift * s + t)
    if isinstance(prev, ops.Conv):
        sc, tc = _per_channel(s, prev.shape), _per_channel(t, prev.shape)
        if sc is None or tc is None:
            return None
        return dataclasses.replace(prev, weight=prev.weight * sc[:, None, None, None],
                                   bias=prev.bias * sc + tc)
    return None


def _scale_before(scale: ops.Scale, nxt: Op) -> Op | None:
    """`M (s * x + t) + b` as one op of nxt's kind, or None if not expressible."""
    s, t = scale.scale, scale.shift
    if isinstance(nxt, ops.Affine):
        return dataclasses.replace(nxt, inputs=scale.inputs, weight=nxt.weight * s[None, :],
                                   bias=nxt.bias + nxt.weight @ t)
    if isinstance(nxt, ops.Scale):
        return dataclasses.replace(nxt, inputs=scale.inputs, scale=nxt.scale * s,
                                   shift=nxt.scale * t + nxt.shift)
    if isinstance(nxt, ops.Conv):
        sc, tc = _per_channel(s, nxt.in_shape), _per_channel(t, nxt.in_shape)
        # Zero padding is applied after the shift in the original graph, so a shift folds
        # into the bias only when the conv has no padding.
        if sc is None or tc is None or (np.any(tc != 0) and any(nxt.pads)):
            return None
        cg = nxt.weight.shape[1]
        out_group = nxt.weight.shape[0] // nxt.group
        in_channel = (np.arange(nxt.weight.shape[0])[:, None] // out_group) * cg + np.arange(cg)
        weight = nxt.weight * sc[in_channel][:, :, None, None]
        bias = nxt.bias + (nxt.weight * tc[in_channel][:, :, None, None]).sum(axis=(1, 2, 3))
        return dataclasses.replace(nxt, inputs=scale.inputs, weight=weight, bias=bias)
    return None


def fold_scale(g: _Graph, name: str) -> bool:
    """Merge a Scale into its producer (if it is the sole consumer) or its sole consumer."""
    op = g.nodes[name]
    if not isinstance(op, ops.Scale):
        return False
    prev_name = op.inputs[0]
    prev = g.nodes[prev_name]
    if g.sole_consumer(prev_name) == name:
        merged = _scale_after(prev, op)
        if merged is not None:
            g.nodes[prev_name] = merged
            g.bypass(name)
            g.notes.append(f"folded scale {name!r} into {prev.kind} {prev_name!r}")
            return True
    user = g.sole_consumer(name)
    if user is not None:
        merged = _scale_before(op, g.nodes[user])
        if merged is not None:
            what = "input normalisation" if isinstance(prev, ops.Input) else "scale"
            g.notes.append(f"folded {what} {name!r} into {g.nodes[user].kind} {user!r}")
            g.nodes[user] = merged
            del g.nodes[name]
            return True
    return False


def fold_permute(g: _Graph, name: str) -> bool:
    """`W x[index] + b` is the Affine with columns of W scattered to `index`."""
    op = g.nodes[name]
    user = g.sole_consumer(name)
    if not (isinstance(op, ops.Permute) and user is not None
            and isinstance(g.nodes[user], ops.Affine)):
        return False
    nxt = g.nodes[user]
    assert isinstance(nxt, ops.Affine)
    weight = np.zeros((nxt.weight.shape[0], op.source_size))
    np.add.at(weight.T, op.index, nxt.weight.T)
    g.nodes[user] = dataclasses.replace(nxt, inputs=op.inputs, weight=weight)
    del g.nodes[name]
    g.notes.append(f"folded permutation {name!r} into affine {user!r}")
    return True


def fold_affine_pair(g: _Graph, name: str) -> bool:
    """`W2 (W1 x + b1) + b2` as one Affine, when W2 W1 has no more entries than W1 and W2."""
    op = g.nodes[name]
    user = g.sole_consumer(name)
    if not (isinstance(op, ops.Affine) and user is not None
            and isinstance(g.nodes[user], ops.Affine)):
        return False
    nxt = g.nodes[user]
    assert isinstance(nxt, ops.Affine)
    if nxt.weight.shape[0] * op.weight.shape[1] > nxt.weight.size + op.weight.size:
        return False
    g.nodes[user] = dataclasses.replace(nxt, inputs=op.inputs, weight=nxt.weight @ op.weight,
                                        bias=nxt.weight @ op.bias + nxt.bias)
    del g.nodes[name]
    g.notes.append(f"merged consecutive affine {name!r} into {user!r}")
    return True


def is_zero_pad(op: Op) -> bool:
    """True if `op` only zero-pads H and W: a stride-1 depthwise 1x1 Conv of weight 1, bias 0."""
    return (isinstance(op, ops.Conv) and op.group == op.in_shape[0] == op.shape[0]
            and op.weight.shape[1:] == (1, 1, 1) and bool(np.all(op.weight == 1.0))
            and not np.any(op.bias) and op.strides == (1, 1) and op.dilations == (1, 1)
            and min(op.pads) >= 0)


def _pad_into(pad: ops.Conv, nxt: Op) -> Op | None:
    """`nxt` reading the unpadded input with the pad added to its own padding, or None.

    Conv pads with zeros, so the sum is exact. AvgPool is exact when the padded cells count
    in the divisor either way: `count_include_pad`, or no padding of its own (the explicit
    zeros counted, so they still must). MaxPool pads with -inf, not 0: never folded.
    """
    pads = tuple(a + b for a, b in zip(pad.pads, getattr(nxt, "pads", (0, 0, 0, 0))))
    if isinstance(nxt, ops.Conv):
        return dataclasses.replace(nxt, inputs=pad.inputs, in_shape=pad.in_shape, pads=pads)
    if isinstance(nxt, ops.AvgPool) and (nxt.count_include_pad or not any(nxt.pads)):
        return dataclasses.replace(nxt, inputs=pad.inputs, in_shape=pad.in_shape, pads=pads,
                                   count_include_pad=True)
    return None


def fold_pad(g: _Graph, name: str) -> bool:
    """Merge a zero padding into its sole consumer's padding (Conv, AvgPool)."""
    op = g.nodes[name]
    user = g.sole_consumer(name)
    if user is None or not is_zero_pad(op):
        return False
    assert isinstance(op, ops.Conv)
    merged = _pad_into(op, g.nodes[user])
    if merged is None:
        return False
    g.nodes[user] = merged
    del g.nodes[name]
    g.notes.append(f"folded zero padding {name!r} into {merged.kind} {user!r}")
    return True


PASSES: tuple[Callable[[_Graph, str], bool], ...] = (
    drop_identity, diagonal_conv_to_scale, fold_scale, fold_permute, fold_affine_pair, fold_pad)


def simplify(net: Network) -> Network:
    """Apply every pass until none changes the graph; the forward function is unchanged.

    Example
    -------
    >>> simple = simplify(load_onnx(path, simplify_graph=False))
    """
    g = _Graph(net)
    changed = True
    while changed:
        changed = False
        for rule in PASSES:
            for name in list(g.nodes):
                if name in g.nodes and rule(g, name):
                    changed = True
    order = [n for n in net.order if n in g.nodes]
    return net.replace([(n, g.nodes[n]) for n in order], g.output, g.notes)
