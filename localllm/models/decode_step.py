"""One decode step (a single new token through every layer) inside one @njit call.

Transformer.forward runs a layer as a dozen Python-level kernel calls. For a
prompt that glue is nothing next to the matmuls, but a decode token of a small
model takes ~10 ms and the glue took ~1 ms of it. Here the layer loop itself
is compiled: the weights go in as one read-only byte array (the file's
memmap) plus a table of (offset, type code, rows, row bytes) per matrix, and
the step calls the very kernels the Python path calls, in the same order, so
its logits are bit-identical to Transformer.forward's (a test checks this).

Only the AVX2 integer kernels are dispatched from here; a model with any
other matrix type (or the portable build) keeps the Python path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import localllm._numba_setup  # noqa: F401
from ..kernels.activations import GELU_TABLE, geglu_tanh, swiglu
from ..kernels.attention import attention_rows, attention_split
from ..kernels.convert import store_kv
from ..kernels.norms import rmsnorm_rows
from ..kernels.rope import rope_qk
from ..quant import dispatch
from ..quant.q8act import ACT_FORMAT, ACT_Q8_1, ACT_Q8_K, _q8_32, _q8_k

if dispatch.USE_X86:
    from ..quant.matvec_x86 import KERNELS, mm_q4_0, mm_q4_1, mm_q4_k, mm_q5_0, mm_q5_k, mm_q6_k, mm_q8_0
else:
    KERNELS = {}

# Matrices of a layer, in the order of the weight table's second axis.
MATS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
WQ, WK, WV, WO, WGATE, WUP, WDOWN = range(7)
# Columns of the weight table.
OFF, CODE, ROWS, ROW_BYTES, ACT = range(5)


@njit(cache=True)
def _matvec(code, raw, xq, xd, xm, out, n_tiles):
    """Dispatch on the weight type code to its integer kernel (codes as in KERNELS)."""
    if code == 2:
        mm_q4_0(raw, xq, xd, xm, out, n_tiles)
    elif code == 3:
        mm_q4_1(raw, xq, xd, xm, out, n_tiles)
    elif code == 6:
        mm_q5_0(raw, xq, xd, xm, out, n_tiles)
    elif code == 8:
        mm_q8_0(raw, xq, xd, xm, out, n_tiles)
    elif code == 12:
        mm_q4_k(raw, xq, xd, xm, out, n_tiles)
    elif code == 13:
        mm_q5_k(raw, xq, xd, xm, out, n_tiles)
    else:
        mm_q6_k(raw, xq, xd, xm, out, n_tiles)


@njit(cache=True)
def _project(blob, wrow, x2, xq_all, xd_all, xm_all, fresh, out2, n_threads):
    """out2 (1, N) = x2 (1, K) @ W.T for the matrix described by wrow (a weight-table row).

    x2 is quantized once per activation format: fresh[kind] is cleared by the caller
    whenever x2 changes, so Q/K/V (and gate/up) share one quantization.
    """
    K = x2.shape[1]
    kind = wrow[ACT]
    xq = xq_all[kind, :K].reshape((1, K))  # (1, K) int8 codes
    xd = xd_all[kind, : K // 32].reshape((1, K // 32))  # (1, K/32) block scales
    xm = xm_all[kind, : K // 32].reshape((1, K // 32))  # (1, K/32) scale * code sum
    if fresh[kind] == 0:
        if kind == ACT_Q8_K:
            _q8_k(x2, xq, xd, xm)
        else:
            _q8_32(x2, xq, xd, xm, kind == ACT_Q8_1)
        fresh[kind] = 1
    off, n, rb = wrow[OFF], wrow[ROWS], wrow[ROW_BYTES]
    raw = blob[off : off + n * rb].reshape((n, rb))  # (N, row_bytes) readonly view
    _matvec(wrow[CODE], raw, xq, xd, xm, out2, max(1, min(n, 4 * n_threads)))


@njit(cache=True)
def decode_layers(x2, blob, wt, norms, head_norms, biases, kc, vc, position, windows, rope_bases,
                  freq_factors, eps, rope_dim, neox, rope_scale, query_scale, attn_softcap, gelu_table,
                  n_head, n_split, n_threads):
    """Run one token's hidden state x2 (1, D) through every layer, in place.

    blob: the model file, readonly uint8; wt (L, 7, 5) int64 weight table (MATS order,
    columns OFF..ACT); norms (L, 4, D) readonly f32: attn, ffn, post-attn, post-ffn (the
    last two used only when head_norms has rows); head_norms (L or 0, 2, dk): q and k
    norms; biases (L or 0, 3, max(H*dk, G*dv)): q, k, v biases; kc/vc (L, G, n_ctx, d)
    cache; position: the token's position; windows (L,) int64 sliding windows, 0 = none;
    rope_bases (L,) float64; gelu_table: GELU_TABLE for GeGLU models, empty for SwiGLU.
    """
    L = wt.shape[0]
    D = x2.shape[1]
    G, dk, dv = kc.shape[1], kc.shape[3], vc.shape[3]
    H = n_head
    gemma = head_norms.shape[0] > 0
    F = wt[0, WGATE, ROWS]
    k_max = max(D, H * dv, F)
    xq_all = np.empty((3, k_max), np.int8)  # (format, K) activation codes
    xd_all = np.empty((3, k_max // 32), np.float32)  # (format, K/32)
    xm_all = np.empty((3, k_max // 32), np.float32)  # (format, K/32)
    fresh = np.zeros(3, np.int64)
    h = np.empty((1, D), np.float32)  # (1, D) normed input of a block
    q = np.empty((1, H * dk), np.float32)  # (1, H*dk)
    k = np.empty((1, G * dk), np.float32)  # (1, G*dk)
    v = np.empty((1, G * dv), np.float32)  # (1, G*dv)
    o = np.empty((1, H, dv), np.float32)  # (1, H, dv) attention output
    blk = np.empty((1, D), np.float32)  # (1, D) a block's output before the residual add
    gate = np.empty((1, F), np.float32)  # (1, F)
    up = np.empty((1, F), np.float32)  # (1, F)
    positions = np.full(1, position, np.int32)  # (1,)
    q3, k3, v3 = q.reshape((1, H, dk)), k.reshape((1, G, dk)), v.reshape((1, G, dv))
    for il in range(L):
        # attention block
        rmsnorm_rows(h, x2, norms[il, 0], eps)
        fresh[:] = 0
        _project(blob, wt[il, WQ], h, xq_all, xd_all, xm_all, fresh, q, n_threads)
        _project(blob, wt[il, WK], h, xq_all, xd_all, xm_all, fresh, k, n_threads)
        _project(blob, wt[il, WV], h, xq_all, xd_all, xm_all, fresh, v, n_threads)
        if biases.shape[0] > 0:
            q[0] += biases[il, 0, : H * dk]
            k[0] += biases[il, 1, : G * dk]
            v[0] += biases[il, 2, : G * dv]
        if gemma:
            rmsnorm_rows(q.reshape((H, dk)), q.reshape((H, dk)), head_norms[il, 0], eps)
            rmsnorm_rows(k.reshape((G, dk)), k.reshape((G, dk)), head_norms[il, 1], eps)
        rope_qk(q3, k3, positions, rope_bases[il], rope_dim, neox, rope_scale, freq_factors)
        q *= query_scale
        store_kv(kc[il], vc[il], k3, v3, position)
        if n_split > 1:
            attention_split(q3, kc[il], vc[il], np.int64(position), windows[il], attn_softcap, n_split, o)
        else:
            attention_rows(q3, kc[il], vc[il], positions, windows[il], attn_softcap, o)
        fresh[:] = 0
        _project(blob, wt[il, WO], o.reshape((1, H * dv)), xq_all, xd_all, xm_all, fresh, blk, n_threads)
        if gemma:
            rmsnorm_rows(blk, blk, norms[il, 2], eps)
        x2 += blk
        # feed-forward block
        rmsnorm_rows(h, x2, norms[il, 1], eps)
        fresh[:] = 0
        _project(blob, wt[il, WGATE], h, xq_all, xd_all, xm_all, fresh, gate, n_threads)
        _project(blob, wt[il, WUP], h, xq_all, xd_all, xm_all, fresh, up, n_threads)
        if gelu_table.shape[0] > 0:
            geglu_tanh(gate, up, gate, gelu_table)
        else:
            swiglu(gate, up, gate)
        fresh[:] = 0
        _project(blob, wt[il, WDOWN], gate, xq_all, xd_all, xm_all, fresh, blk, n_threads)
        if gemma:
            rmsnorm_rows(blk, blk, norms[il, 3], eps)
        x2 += blk


class DecodePlan:
    """The arrays decode_layers needs, built once per model from its weights' views."""

    def __init__(self, model, blob: np.ndarray):
        c, spec = model.cfg, model.spec
        self.cfg = c
        base = blob.ctypes.data
        wt = np.zeros((c.n_layer, len(MATS), 5), np.int64)  # (L, 7, 5) weight table
        for il, layer in enumerate(model.layers):
            for j, name in enumerate(MATS):
                w = getattr(layer, name)
                off = w.raw.ctypes.data - base
                assert 0 <= off and off + w.raw.nbytes <= blob.nbytes, "weight outside the model file"
                wt[il, j] = (off, w.fmt.code, w.shape[0], w.raw.shape[1], ACT_FORMAT[w.fmt.code])
        self.blob, self.wt = blob, wt
        D, dk = c.n_embd, c.head_dim
        norms = np.zeros((c.n_layer, 4, D), np.float32)  # (L, 4, D)
        gemma = spec.gemma_style
        head_norms = np.zeros((c.n_layer if gemma else 0, 2, dk), np.float32)  # (L|0, 2, dk)
        width = max(c.n_head * dk, c.n_head_kv * c.head_dim_v)
        biases = np.zeros((c.n_layer if spec.qkv_bias else 0, 3, width), np.float32)  # (L|0, 3, width)
        for il, layer in enumerate(model.layers):
            norms[il, 0], norms[il, 1] = layer.attn_norm, layer.ffn_norm
            if gemma:
                norms[il, 2], norms[il, 3] = layer.post_attn_norm, layer.post_ffn_norm
                head_norms[il] = layer.q_norm, layer.k_norm
            if spec.qkv_bias:
                biases[il, 0, : len(layer.bq)] = layer.bq
                biases[il, 1, : len(layer.bk)] = layer.bk
                biases[il, 2, : len(layer.bv)] = layer.bv
        for a in (norms, head_norms, biases):
            a.flags.writeable = False  # one kernel specialization with the memmapped vectors
        self.norms, self.head_norms, self.biases = norms, head_norms, biases
        self.windows = np.array([c.sliding_window if c.layer_slides(il) else 0 for il in range(c.n_layer)],
                                np.int64)  # (L,)
        self.rope_bases = np.array([c.rope_base_swa if c.layer_slides(il) else c.rope_base
                                    for il in range(c.n_layer)], np.float64)  # (L,)
        self.freq_factors = model.freq_factors
        self.gelu_table = GELU_TABLE if spec.activation == "gelu_tanh" else np.zeros(0, np.float32)

    @staticmethod
    def supports(model) -> bool:
        """True when every layer matrix has an integer kernel here (AVX2 build only)."""
        return bool(KERNELS) and model.spec.activation in ("silu", "gelu_tanh") and all(
            getattr(layer, name).fmt.code in KERNELS for layer in model.layers for name in MATS)

    def run(self, x: np.ndarray, cache, position: int, n_split: int, n_threads: int) -> None:
        """x (1, D) float32 embedded token -> hidden state after the last layer, in place."""
        c = self.cfg
        decode_layers(x, self.blob, self.wt, self.norms, self.head_norms, self.biases, cache.k, cache.v,
                      position, self.windows, self.rope_bases, self.freq_factors, np.float32(c.rms_eps),
                      c.rope_dim, c.rope_neox, float(c.rope_scale), np.float32(c.query_scale),
                      np.float32(c.attn_softcap), self.gelu_table, c.n_head, n_split, n_threads)
