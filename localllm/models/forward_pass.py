"""One decode step (a single new token through every layer) inside one @njit call.

Transformer.forward runs a layer as a dozen Python-level kernel calls. For a
prompt that glue is nothing next to the matmuls, but a decode token of a small
model takes ~10 ms and the glue took ~1 ms of it. Here the layer loop itself
is compiled: the weights go in as one read-only byte array (the file's
memmap) plus a table of (offset, type code, rows, row bytes) per matrix, and
the step calls the very kernels the Python path calls, in the same order, so
its logits are bit-identical to Transformer.forward's (a test checks this).

Only the x86 kernels (integer dots on the avx2 / avx512 path, and float dots
for F32/F16/BF16) are dispatched from here; a model with any other matrix
type, such as Q5_1 or Q3_K, and the portable path keep the Python path. The
kernels are the ones prompt chunks use, so a decoded token's logits are the
bits a prompt row would get.
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
from ..quant.dispatch import FLOAT_CODES, KERNELS
from ..quant.dequant import dequant_row
from ..quant.gemm_tiles import row_tiles
from ..quant.matmul_float import mm_float
from ..quant.q8act import ACT_FORMAT, quantize_activations

if dispatch.USE_X86:
    from ..quant.int_gemm import mm_q4_0, mm_q4_1, mm_q4_k, mm_q5_0, mm_q5_k, mm_q6_k, mm_q8_0

# Matrices of a layer, in the order of the weight table's second axis.
MATS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
WQ, WK, WV, WO, WGATE, WUP, WDOWN = range(7)
# Columns of the weight table.
OFF, CODE, ROWS, ROW_BYTES, ACT = range(5)


@njit(cache=True)
def _matvec(code, raw, xq, xd, xm, xs, out, n_rtiles):
    """Dispatch on the weight type code to its integer kernel (codes as in KERNELS)."""
    if code == 2:
        mm_q4_0(raw, xq, xd, xm, xs, out, n_rtiles)
    elif code == 3:
        mm_q4_1(raw, xq, xd, xm, xs, out, n_rtiles)
    elif code == 6:
        mm_q5_0(raw, xq, xd, xm, xs, out, n_rtiles)
    elif code == 8:
        mm_q8_0(raw, xq, xd, xm, xs, out, n_rtiles)
    elif code == 12:
        mm_q4_k(raw, xq, xd, xm, xs, out, n_rtiles)
    elif code == 13:
        mm_q5_k(raw, xq, xd, xm, xs, out, n_rtiles)
    elif code == 14:
        mm_q6_k(raw, xq, xd, xm, xs, out, n_rtiles)
    else:  # DecodePlan.supports() admits no other code
        raise ValueError("no integer kernel for this weight type")


@njit(cache=True)
def _project(blob, wrow, x2, acts, fresh, out2, n_threads):
    """out2 (1, N) = x2 (1, K) @ W.T for the matrix described by wrow (a weight-table row).

    x2 is quantized once per activation format: fresh[kind] is cleared by the caller
    whenever x2 changes, so Q/K/V (and gate/up) share one quantization.
    """
    off, n, rb = wrow[OFF], wrow[ROWS], wrow[ROW_BYTES]
    raw = blob[off : off + n * rb].reshape((n, rb))  # (N, row_bytes) readonly view
    kind = wrow[ACT]
    if kind < 0:  # F32 / F16 / BF16 weights: float dots, no activation codes
        mm_float(raw, wrow[CODE], x2, out2, max(1, min(n, 4 * n_threads)))  # dispatch._n_tiles' split
        return
    xq_all, xd_all, xm_all, xs_all = acts
    K = x2.shape[1]
    xq = xq_all[kind, :K].reshape((1, K))  # (1, K) int8 codes
    xd = xd_all[kind, : K // 32].reshape((1, K // 32))  # (1, K/32) block scales
    xm = xm_all[kind, : K // 32].reshape((1, K // 32))  # (1, K/32) scale * code sum
    xs = xs_all[kind, : K // 32].reshape((1, K // 32))  # (1, K/32) code sum
    if fresh[kind] == 0:
        quantize_activations(x2, kind, xq, xd, xm, xs)
        fresh[kind] = 1
    _matvec(wrow[CODE], raw, xq, xd, xm, xs, out2, row_tiles(n, 1, n_threads))


@njit(cache=True)
def decode_layers(x2, blob, wt, norms, head_norms, biases, kc, vc, position, windows, rope_bases,
                  freq_factors, eps, rope_dim, neox, rope_scale, query_scale, attn_softcap, gelu_table,
                  n_head, n_split, n_threads, acts):
    """Run one token's hidden state x2 (1, D) through every layer, in place.

    blob: the model file, readonly uint8; wt (L, 7, 5) int64 weight table (MATS order,
    columns OFF..ACT); norms (L, 4, D) readonly f32: attn, ffn, post-attn, post-ffn (the
    last two used only when head_norms has rows); head_norms (L or 0, 2, dk): q and k
    norms; biases (L or 0, 3, max(H*dk, G*dv)): q, k, v biases; kc/vc (L, G, n_ctx, d)
    cache; position: the token's position; windows (L,) int64 sliding windows, 0 = none;
    rope_bases (L,) float64; gelu_table: GELU_TABLE for GeGLU models, empty for SwiGLU;
    acts: _act_scratch for the widest matrix input.
    """
    L = wt.shape[0]
    D = x2.shape[1]
    G, dk, dv = kc.shape[1], kc.shape[3], vc.shape[3]
    H = n_head
    gemma = head_norms.shape[0] > 0
    F = wt[0, WGATE, ROWS]
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
        _project(blob, wt[il, WQ], h, acts, fresh, q, n_threads)
        _project(blob, wt[il, WK], h, acts, fresh, k, n_threads)
        _project(blob, wt[il, WV], h, acts, fresh, v, n_threads)
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
        _project(blob, wt[il, WO], o.reshape((1, H * dv)), acts, fresh, blk, n_threads)
        if gemma:
            rmsnorm_rows(blk, blk, norms[il, 2], eps)
        x2 += blk
        # feed-forward block
        rmsnorm_rows(h, x2, norms[il, 1], eps)
        fresh[:] = 0
        _project(blob, wt[il, WGATE], h, acts, fresh, gate, n_threads)
        _project(blob, wt[il, WUP], h, acts, fresh, up, n_threads)
        if gelu_table.shape[0] > 0:
            geglu_tanh(gate, up, gate, gelu_table)
        else:
            swiglu(gate, up, gate)
        fresh[:] = 0
        _project(blob, wt[il, WDOWN], gate, acts, fresh, blk, n_threads)
        if gemma:
            rmsnorm_rows(blk, blk, norms[il, 3], eps)
        x2 += blk


@njit(cache=True)
def _act_scratch(k_max):
    """Activation buffers for inputs of up to k_max features, one row per format:
    codes (3, k_max) int8, block scales and scale * sums (3, k_max / 32) f32, code sums int32."""
    return (np.empty((3, k_max), np.int8), np.empty((3, k_max // 32), np.float32),
            np.empty((3, k_max // 32), np.float32), np.empty((3, k_max // 32), np.int32))


@njit(cache=True)
def decode_token(token, logits, blob, emb, embed_scale, head, out_norm, wt, norms, head_norms, biases, kc, vc,
                 position, windows, rope_bases, freq_factors, eps, rope_dim, neox, rope_scale, query_scale,
                 attn_softcap, gelu_table, n_head, n_split, n_threads):
    """Embed one token id, run decode_layers, then the final norm and LM head into logits (1, V).

    emb, head: weight-table rows (OFF..ACT) of the embedding and the output matrix;
    out_norm (D,) readonly f32. Every other argument is decode_layers'.
    """
    D = norms.shape[2]
    x = np.empty((1, D), np.float32)  # (1, D) hidden state
    off, rb = emb[OFF], emb[ROW_BYTES]
    dequant_row(emb[CODE], blob[off + token * rb : off + (token + 1) * rb], x[0])
    if embed_scale != 1.0:
        x *= embed_scale
    acts = _act_scratch(max(D, n_head * vc.shape[3], wt[0, WGATE, ROWS]))
    decode_layers(x, blob, wt, norms, head_norms, biases, kc, vc, position, windows, rope_bases, freq_factors,
                  eps, rope_dim, neox, rope_scale, query_scale, attn_softcap, gelu_table, n_head, n_split,
                  n_threads, acts)
    h = np.empty((1, D), np.float32)  # (1, D)
    rmsnorm_rows(h, x, out_norm, eps)
    _project(blob, head, h, acts, np.zeros(3, np.int64), logits, n_threads)


class DecodePlan:
    """The arrays decode_token needs, built once per model from its weights' views."""

    def __init__(self, model, blob: np.ndarray):
        c, spec = model.cfg, model.spec
        self.cfg = c
        wt = np.zeros((c.n_layer, len(MATS), 5), np.int64)  # (L, 7, 5) weight table
        for il, layer in enumerate(model.layers):
            for j, name in enumerate(MATS):
                wt[il, j] = self._table_row(getattr(layer, name), blob)
        self.blob, self.wt = blob, wt
        self.emb, self.head = (self._table_row(w, blob) for w in (model.tok_embd, model.output))
        self.out_norm = np.array(model.output_norm, np.float32)  # (D,)
        self.out_norm.flags.writeable = False
        self.vocab = model.cfg.vocab_size
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
        # decode_token's per-model arguments, converted once (a token costs ~5 ms; each
        # np.float32(...) here would be a microsecond of it)
        self._weights = (self.blob, self.emb, np.float32(c.embed_scale), self.head, self.out_norm, self.wt,
                         self.norms, self.head_norms, self.biases)
        self._model_args = (self.windows, self.rope_bases, self.freq_factors, np.float32(c.rms_eps), c.rope_dim,
                            c.rope_neox, float(c.rope_scale), np.float32(c.query_scale),
                            np.float32(c.attn_softcap), self.gelu_table, c.n_head)

    @staticmethod
    def _table_row(w, blob: np.ndarray) -> np.ndarray:
        """(OFF, CODE, ROWS, ROW_BYTES, ACT) of a weight matrix inside the model file."""
        off = w.raw.ctypes.data - blob.ctypes.data
        assert 0 <= off and off + w.raw.nbytes <= blob.nbytes, "weight outside the model file"
        return np.array([off, w.fmt.code, w.shape[0], w.raw.shape[1], ACT_FORMAT.get(w.fmt.code, -1)], np.int64)

    @staticmethod
    def supports(model) -> bool:
        """True when every matrix a token meets has a kernel here (AVX2 build only)."""
        mats = [getattr(layer, name) for layer in model.layers for name in MATS] + [model.output]
        return bool(KERNELS) and model.spec.activation in ("silu", "gelu_tanh") and all(
            w.fmt.code in KERNELS or w.fmt.code in FLOAT_CODES for w in mats)

    def step(self, token: int, cache, position: int, n_split: int, n_threads: int) -> np.ndarray:
        """Logits (1, vocab) float32 for one token id at `position`, its K/V written to the cache."""
        logits = np.empty((1, self.vocab), np.float32)  # (1, V)
        decode_token(token, logits, *self._weights, cache.k, cache.v, position, *self._model_args, n_split,
                     n_threads)
        return logits
