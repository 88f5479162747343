"""Stage 2: the LSTM autoencoder's forward pass in NumPy.

Keras weights are folded once at load time, so the per-step loop is as short as NumPy allows
(at batch 1 the number of Python-level steps, not arithmetic, sets the latency):

- the four gates share one matrix product;
- sigmoid gates are pre-scaled by 1/2 so one tanh serves all four gates, using
  sigmoid(z) = 0.5 * tanh(z / 2) + 0.5;
- the two stacked LSTMs of the encoder (and of the decoder) run as one wavefront: at step t
  the lower layer reads input t while the upper layer reads the lower layer's output from
  step t-1, so one block matrix serves both and W+1 steps replace 2W;
- the gates of both layers are interleaved as [i1 i2 | f1 f2 | o1 o2 | g1 g2], so every
  elementwise operation covers both layers at once;
- inputs of all steps are projected in one matrix product before the loop, and the decoder's
  repeated input only once.

Every matrix product is taken window by window (``rowwise``: a stack of [1, k] @ [k, n]), so a
window gets the same bits alone or in a batch of any size: the streaming and batch forms, and a
multi-stream detector and N separate ones, agree exactly, not to a tolerance. (One [b, k] @ [k, n]
product rounds a row differently from that row alone: up to 8e-7 apart, measured.)
"""
from typing import Dict, Tuple

import numpy as np

# The Keras layer names, which key the bundle's weight arrays ("enc1/kernel", ...).
LSTM_LAYERS = ("enc1", "enc2", "dec1", "dec2")
DENSE_LAYERS = ("bottleneck", "output")

def _gate_columns(units: int, offset: int, total: int) -> np.ndarray:
    # Keras gate order (i, f, c, o) -> column positions in the interleaved layout
    # [i1 i2 | f1 f2 | o1 o2 | g1 g2] of a pair of layers with ``total`` units together.
    r = np.arange(units)
    return np.concatenate([offset + r, total + offset + r, 3 * total + offset + r, 2 * total + offset + r])


def fold_lstm_pair(lower: Tuple[np.ndarray, ...], upper: Tuple[np.ndarray, ...]) -> Dict[str, object]:
    """Two stacked Keras LSTMs (kernel, recurrent_kernel, bias each) -> one wavefront cell.

    Returns float32 arrays: ``W_in`` [inputs, 4U] projects the lower layer's input into the
    combined gates, ``U`` [U, 4U] is the block recurrent matrix [[U1, K2], [0, U2]], ``b``
    [4U] holds both biases; U = u1 + u2. Sigmoid columns are pre-scaled by 1/2.
    """
    (k1, r1, b1), (k2, r2, b2) = lower, upper
    u1, u2 = r1.shape[0], r2.shape[0]
    total = u1 + u2
    cols1, cols2 = _gate_columns(u1, 0, total), _gate_columns(u2, u1, total)
    w_in = np.zeros((k1.shape[0], 4 * total))
    rec = np.zeros((total, 4 * total))
    bias = np.zeros(4 * total)
    w_in[:, cols1] = k1
    rec[:u1, cols1] = r1          # lower layer's own recurrence
    rec[:u1, cols2] = k2          # lower layer's output (step t-1) is the upper layer's input
    rec[u1:, cols2] = r2          # upper layer's own recurrence
    bias[cols1], bias[cols2] = b1, b2
    scale = np.full(4 * total, 0.5)
    scale[3 * total:] = 1.0       # the cell candidates keep their tanh
    f32 = np.float32
    return {"W_in": (w_in * scale).astype(f32), "U": (rec * scale).astype(f32), "b": (bias * scale).astype(f32),
            "lower_units": u1, "upper_units": u2}


def fold_weights(arrays: Dict[str, np.ndarray]) -> Dict[str, object]:
    """The bundle's named Keras arrays ("enc1/kernel", ...) -> the folded arrays ``lstm_ae_forward`` uses."""
    def lstm(name):
        return arrays[name + "/kernel"], arrays[name + "/recurrent_kernel"], arrays[name + "/bias"]
    enc1, enc2, dec1, dec2 = LSTM_LAYERS
    w: Dict[str, object] = {"encoder": fold_lstm_pair(lstm(enc1), lstm(enc2)),
                            "decoder": fold_lstm_pair(lstm(dec1), lstm(dec2))}
    for name in DENSE_LAYERS:
        w[name] = {"W": arrays[name + "/kernel"].astype(np.float32), "b": arrays[name + "/bias"].astype(np.float32)}
    return w


def rowwise(x: np.ndarray, w: np.ndarray, out: np.ndarray = None) -> np.ndarray:
    """x @ w with every row of x multiplied on its own: [b, k] @ [k, n] -> [b, n], the bits of b single products.

    >>> x = np.arange(6, dtype=np.float32).reshape(2, 3); w = np.ones((3, 2), np.float32)
    >>> rowwise(x, w).tolist()
    [[3.0, 3.0], [12.0, 12.0]]
    """
    if out is None:
        return np.matmul(x[:, None, :], w)[:, 0]
    np.matmul(x[:, None, :], w, out=out[:, None, :])
    return out


def _lstm_wavefront(cell: Dict[str, object], inputs: np.ndarray, steps: int, keep_sequence: bool) -> np.ndarray:
    # inputs: the lower layer's input, [batch, steps, features], or [batch, features] when it
    # repeats at every step (the decoder) -> the upper layer's outputs [batch, steps, u2]
    # (keep_sequence) or its last output [batch, u2].
    u1, total = cell["lower_units"], cell["lower_units"] + cell["upper_units"]
    batch = inputs.shape[0]
    # [b, steps, features] is a stack of per-window products already; [b, features] is made one
    drive = (inputs @ cell["W_in"] if inputs.ndim == 3 else rowwise(inputs, cell["W_in"])) + cell["b"]
    repeated = drive.ndim == 2
    h = np.zeros((batch, total), dtype=np.float32)             # [h_lower | h_upper]
    c = np.zeros((batch, total), dtype=np.float32)
    z = np.empty((batch, 4 * total), dtype=np.float32)
    tmp = np.empty((batch, total), dtype=np.float32)
    sig, i, f, o, g = (z[:, :3 * total], z[:, :total], z[:, total:2 * total], z[:, 2 * total:3 * total],
                       z[:, 3 * total:])
    seq = np.empty((batch, steps, total - u1), dtype=np.float32) if keep_sequence else None
    U = cell["U"]
    for t in range(steps + 1):
        rowwise(h, U, out=z)
        if repeated:
            z += drive
        elif t < steps:
            z += drive[:, t]
        else:
            z += cell["b"]                                     # the lower layer's extra step is discarded
        np.tanh(z, out=z)
        sig *= 0.5
        sig += 0.5
        c *= f
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(o, tmp, out=h)
        if t == 0:
            h[:, u1:] = 0.0                                    # the upper layer starts at step 1
            c[:, u1:] = 0.0
        elif keep_sequence:
            seq[:, t - 1] = h[:, u1:]
    return seq if keep_sequence else h[:, u1:].copy()


def lstm_ae_forward(w: Dict[str, object], windows: np.ndarray) -> np.ndarray:
    """Reconstruct prepared windows: [batch, time, sensors] -> [batch, time, sensors], float32.

    >>> rng = np.random.default_rng(0)
    >>> shapes = {"enc1": (2, 3), "enc2": (3, 2), "dec1": (1, 2), "dec2": (2, 3)}   # (inputs, units)
    >>> arrays = {}
    >>> for name, (n_in, units) in shapes.items():
    ...     arrays[name + "/kernel"] = rng.normal(size=(n_in, 4 * units))
    ...     arrays[name + "/recurrent_kernel"] = rng.normal(size=(units, 4 * units))
    ...     arrays[name + "/bias"] = rng.normal(size=4 * units)
    >>> arrays.update({"bottleneck/kernel": rng.normal(size=(2, 1)), "bottleneck/bias": np.zeros(1),
    ...                "output/kernel": rng.normal(size=(3, 2)), "output/bias": np.zeros(2)})
    >>> lstm_ae_forward(fold_weights(arrays), rng.normal(size=(5, 7, 2))).shape
    (5, 7, 2)
    """
    x = np.asarray(windows, dtype=np.float32)
    steps = x.shape[1]
    h2 = _lstm_wavefront(w["encoder"], x, steps, keep_sequence=False)                  # [b, upper units]
    code = np.maximum(rowwise(h2, w["bottleneck"]["W"]) + w["bottleneck"]["b"], 0.0)     # [b, bottleneck]
    h4 = _lstm_wavefront(w["decoder"], code, steps, keep_sequence=True)                # [b, t, upper units]
    return h4 @ w["output"]["W"] + w["output"]["b"]                                    # [b, t, sensors]


