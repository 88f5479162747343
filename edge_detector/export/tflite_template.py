"""TFLite conversion once per architecture: every model of one shape is the same graph with other weights.

The converter takes ~10 s a model (half of an export). A fleet of machines shares one
architecture, so ``make_template`` converts it once, with each weight set to a code for its own
position (``OFFSET + k`` for the k-th element of the concatenated Keras weights: exact in float32).
Every constant buffer of the converted model that holds only such codes is a gather of the
weights: the converter only splits, transposes and reshapes them. ``fill_template`` then writes
another model's weights into a copy of the template in milliseconds. Whatever it writes still
goes through the bundle's own parity gate against Keras, like a model the converter made.

    Keras weights [w_0 ... w_N-1] --template slots: buffer b <- w[index_b]--> TFLite bytes
"""
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

OFFSET = 2.0 ** 20          # codes are OFFSET + k: above any constant the graph holds, exact in float32 up to 2**24
MAX_WEIGHTS = 2 ** 24 - 2 ** 20


class Template(NamedTuple):
    """A converted model whose weight buffers are known gathers of the Keras weights."""
    blob: bytes                                   # the template model (weights hold their codes)
    slots: Tuple[Tuple[int, np.ndarray], ...]     # (buffer index, [n] int64 positions in the flat weights)
    shapes: Tuple[Tuple[int, ...], ...]           # the Keras weights' shapes, in get_weights() order


class TemplateError(RuntimeError):
    """The architecture cannot be filled in: the converter did more than move weights (a full conversion is needed)."""


def coded_weights(shapes: Sequence[Tuple[int, ...]]) -> List[np.ndarray]:
    """Weights of the given shapes whose values code their position: [OFFSET, OFFSET + 1, ...] in order.

    >>> [w.tolist() for w in coded_weights([(2,), (1, 2)])]
    [[1048576.0, 1048577.0], [[1048578.0, 1048579.0]]]
    """
    total = int(sum(np.prod(s, dtype=np.int64) for s in shapes))
    if total > MAX_WEIGHTS:
        raise TemplateError("%d weights are more than a template can code (%d)" % (total, MAX_WEIGHTS))
    codes = OFFSET + np.arange(total, dtype=np.float64)
    out, start = [], 0
    for s in shapes:
        n = int(np.prod(s, dtype=np.int64))
        out.append(codes[start:start + n].astype(np.float32).reshape(s))
        start += n
    return out


def _buffers(blob: bytearray):
    """(schema module, [(buffer index, uint8 view of its data inside ``blob``)]) of a TFLite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415 (workstation only)
    model = schema.Model.GetRootAs(blob, 0)
    out = []
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        if buf.DataLength() and buf.DataLength() % 4 == 0:
            out.append((i, buf.DataAsNumpy()))
    return out


def make_template(blob: bytes, shapes: Sequence[Tuple[int, ...]]) -> Template:
    """The template of a model converted from ``coded_weights(shapes)``; TemplateError when a buffer mixes codes with
    other values or a weight is found nowhere (then the converter computed something from the weights)."""
    total = int(sum(np.prod(s, dtype=np.int64) for s in shapes))
    data = bytearray(blob)
    slots, seen = [], np.zeros(total, dtype=bool)
    for i, raw in _buffers(data):
        values = raw.view(np.float32).astype(np.float64)
        coded = (values >= OFFSET) & (values < OFFSET + total)
        if not coded.any():
            continue                               # a constant of the graph (shapes, zero states): the same for all
        if not coded.all() or np.any(values != np.round(values)):
            raise TemplateError("buffer %d holds %d coded and %d other values: the converter computed from the "
                                "weights" % (i, coded.sum(), (~coded).sum()))
        index = (values - OFFSET).astype(np.int64)
        seen[index] = True
        slots.append((i, index))
    if not seen.all():
        raise TemplateError("%d of %d weights appear in no buffer of the converted model" % ((~seen).sum(), total))
    return Template(bytes(blob), tuple(slots), tuple(tuple(int(d) for d in s) for s in shapes))


def fill_template(template: Template, weights: Sequence[np.ndarray]) -> bytes:
    """The template's model with ``weights`` (Keras get_weights() order and shapes) written into its buffers."""
    shapes = tuple(tuple(int(d) for d in np.shape(w)) for w in weights)
    if shapes != template.shapes:
        raise TemplateError("weights of shapes %s do not fit a template for %s" % (shapes, template.shapes))
    flat = np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in weights])
    data = bytearray(template.blob)
    views: Dict[int, np.ndarray] = dict(_buffers(data))
    for i, index in template.slots:
        views[i].view(np.float32)[:] = flat[index]
    return bytes(data)
