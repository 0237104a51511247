"""The forward pass: a flattened batch of tokens through every layer, in one @njit call.

A batch is any mix of rows: one decode token from each of several sequences,
a chunk of a prompt, k + 1 tokens to verify. Row t carries its token id, its
position, its sequence (which block table of the paged KV cache it reads and
writes) and its cache slot. Every per-row operation (norms, RoPE, the
quantized matmuls, attention) has one arithmetic per row, so a row's logits
are the same bits whatever else shares the batch and however it is cut.

The layer loop is compiled: a decode token of a small model takes ~10 ms, and
the Python glue between a dozen kernel calls per layer was ~1 ms of it. The
weights go in as one read-only byte array (the file's memmap) plus a table of
(offset, type code, rows, row bytes) per matrix. Matrices are dispatched
through quant.matmul_table with the model's format mask as a literal, so only
the kernels of the model's own weight types are compiled. Every kernel is
called through an address table (kernels.by_address, built by
prebuild.leaf_table): this module's compile neither compiles the kernels nor
takes their code in, so it can run beside theirs on a cold start.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba import literally, njit, types
from numba.extending import overload

import localllm._numba_setup  # noqa: F401
from ..kernels import PAR_ROWS
from ..kernels.by_address import by_address
from ..kernels.activations import GELU_TABLE, geglu_tanh, swiglu
from ..kernels.attention import attention_rows, attention_split
from ..kernels.convert import store_kv
from ..kernels.norms import rmsnorm_rows, rmsnorm_rows_par
from ..kernels.rope import rope_qk, rope_qk_par
from ..quant.matmul_table import call_with_mask, dequant_masked, format_mask, project
from .prebuild import compile_leaves, compile_lock, leaf_table

# Decode with one query row spreads its keys over threads only with enough of them.
SPLIT_MIN_KEYS = 256


def key_splits(n_rows: int, n_cached: int, kv_heads: int, threads: int) -> int:
    """Key chunks per KV head for attention. A single query row's work items are its KV heads;
    only when there are fewer of them than threads (and enough keys) are a head's keys split.
    Measured on 2 cores: splitting SmolLM2's 3 KV heads made decode 4-15% slower at 300-2000
    cached tokens, so it is not done there. The split changes no bit of the result."""
    if n_rows == 1 and n_cached >= SPLIT_MIN_KEYS and kv_heads < threads:
        return max(1, threads // kv_heads)
    return 1


# Matrices of a layer, in the order of the weight table's second axis.
MATS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
WQ, WK, WV, WO, WGATE, WUP, WDOWN = range(7)
# Columns of the weight table.
OFF, CODE, ROWS, ROW_BYTES = range(4)


@njit(inline="always", cache=True)
def _matrix(blob, wrow):
    """The (N, row_bytes) readonly view of a weight-table row's matrix inside the file."""
    off, n, rb = wrow[OFF], wrow[ROWS], wrow[ROW_BYTES]
    return blob[off : off + n * rb].reshape((n, rb))


# The leaf kernels, called through the address table fns (kernels.by_address): this
# module's compile then leaves their code alone. The matmuls go the same way (project).
_rmsnorm_rows, _rmsnorm_rows_par = by_address(rmsnorm_rows), by_address(rmsnorm_rows_par)
_rope_qk, _rope_qk_par = by_address(rope_qk), by_address(rope_qk_par)
_store_kv, _swiglu, _geglu_tanh = by_address(store_kv), by_address(swiglu), by_address(geglu_tanh)
_attention_rows, _attention_split = by_address(attention_rows), by_address(attention_split)


@njit(inline="always", cache=True)
def _norm(fns, out, x, w, eps):
    if x.shape[0] >= PAR_ROWS:
        _rmsnorm_rows_par(fns, out, x, w, eps)
    else:
        _rmsnorm_rows(fns, out, x, w, eps)


# A bit of the forward's literal mask beside the weight formats: decode rows may split their
# keys over threads (attention_split). Without it that kernel is not compiled (16 s of a
# cold start) and a requested split runs attention_rows, which gives the same bits.
SPLIT_ATTENTION = 1 << 40


def _attend(mask, fns, q3, kc, vc, positions, seq, tables, window, softcap, n_split, out):
    raise NotImplementedError  # only callable from numba-compiled code


@overload(_attend)
def _attend_impl(mask, fns, q3, kc, vc, positions, seq, tables, window, softcap, n_split, out):
    if not isinstance(mask, types.IntegerLiteral):
        return None
    if mask.literal_value & SPLIT_ATTENTION:
        def impl(mask, fns, q3, kc, vc, positions, seq, tables, window, softcap, n_split, out):
            if n_split > 1 and q3.shape[0] == 1:
                _attention_split(fns, q3, kc, vc, tables[seq[0]], np.int64(positions[0]), window, softcap,
                                 n_split, out)
            else:
                _attention_rows(fns, q3, kc, vc, positions, seq, tables, window, softcap, out)
        return impl

    def impl(mask, fns, q3, kc, vc, positions, seq, tables, window, softcap, n_split, out):
        _attention_rows(fns, q3, kc, vc, positions, seq, tables, window, softcap, out)
    return impl


# Inlined into forward_batch, its only caller: numba links a callee's IR into its caller
# and optimizes and emits it again there (when the kernels were still linked in, a separate
# function cost 10 s of one cold Gemma 3 compile on 2 cores).
@njit(inline="always", cache=True)
def forward_layers(mask, fns, x, blob, wt, norms, head_norms, biases, kpool, vpool, positions, seq, tables, slots,
                   windows, rope_bases, freq_factors, eps, rope_dim, neox, rope_scale, query_scale, attn_softcap,
                   gelu_table, n_head, n_split, n_threads, acts):
    """Run the hidden states x (T, D) through every layer, in place.

    mask: the model's format mask (a literal in forward_batch; see matmul_table); blob: the model file,
    readonly uint8; wt (L, 7, 4) int64 weight table (MATS order, columns OFF..ROW_BYTES);
    norms (L, 4, D) readonly f32: attn, ffn, post-attn, post-ffn (the last two used only
    when head_norms has rows); head_norms (L or 0, 2, dk): q and k norms; biases
    (L or 0, 3, max(H*dk, G*dv)): q, k, v biases; kpool/vpool (L, NB, G, bs, d): the
    paged cache; positions (T,) int32; seq (T,) int32: row t's block table is
    tables[seq[t]]; tables (S, max_blocks) int32; slots (T,) int64: where row t's key
    and value are written; windows (L,) int64 sliding windows, 0 = none; rope_bases
    (L,) float64; gelu_table: GELU_TABLE for GeGLU models, empty for SwiGLU; n_split:
    key chunks per KV head for a single-row batch; acts: _act_scratch for T rows; fns: the
    leaf kernels' address table (prebuild.leaf_table).
    """
    L = wt.shape[0]
    T, D = x.shape
    G, dk, dv = kpool.shape[2], kpool.shape[4], vpool.shape[4]
    H = n_head
    gemma = head_norms.shape[0] > 0
    F = wt[0, WGATE, ROWS]
    fresh = np.zeros(3, np.int64)
    h = np.empty((T, D), np.float32)  # (T, D) normed input of a block
    q = np.empty((T, H * dk), np.float32)  # (T, H*dk)
    k = np.empty((T, G * dk), np.float32)  # (T, G*dk)
    v = np.empty((T, G * dv), np.float32)  # (T, G*dv)
    o = np.empty((T, H, dv), np.float32)  # (T, H, dv) attention output
    blk = np.empty((T, D), np.float32)  # (T, D) a block's output before the residual add
    gate = np.empty((T, F), np.float32)  # (T, F)
    up = np.empty((T, F), np.float32)  # (T, F)
    q3, k3, v3 = q.reshape((T, H, dk)), k.reshape((T, G, dk)), v.reshape((T, G, dv))
    for il in range(L):
        # attention block
        _norm(fns, h, x, norms[il, 0], eps)
        fresh[:] = 0
        project(mask, fns, wt[il, WQ, CODE], _matrix(blob, wt[il, WQ]), h, acts, fresh, q, n_threads)
        project(mask, fns, wt[il, WK, CODE], _matrix(blob, wt[il, WK]), h, acts, fresh, k, n_threads)
        project(mask, fns, wt[il, WV, CODE], _matrix(blob, wt[il, WV]), h, acts, fresh, v, n_threads)
        if biases.shape[0] > 0:
            q += biases[il, 0, : H * dk]
            k += biases[il, 1, : G * dk]
            v += biases[il, 2, : G * dv]
        if gemma:
            _norm(fns, q.reshape((T * H, dk)), q.reshape((T * H, dk)), head_norms[il, 0], eps)
            _norm(fns, k.reshape((T * G, dk)), k.reshape((T * G, dk)), head_norms[il, 1], eps)
        if T >= PAR_ROWS:
            _rope_qk_par(fns, q3, k3, positions, rope_bases[il], rope_dim, neox, rope_scale, freq_factors)
        else:
            _rope_qk(fns, q3, k3, positions, rope_bases[il], rope_dim, neox, rope_scale, freq_factors)
        q *= query_scale
        _store_kv(fns, kpool[il], vpool[il], k3, v3, slots)
        _attend(mask, fns, q3, kpool[il], vpool[il], positions, seq, tables, windows[il], attn_softcap, n_split, o)
        fresh[:] = 0
        project(mask, fns, wt[il, WO, CODE], _matrix(blob, wt[il, WO]), o.reshape((T, H * dv)), acts, fresh, blk,
                n_threads)
        if gemma:
            _norm(fns, blk, blk, norms[il, 2], eps)
        x += blk
        # feed-forward block
        _norm(fns, h, x, norms[il, 1], eps)
        fresh[:] = 0
        project(mask, fns, wt[il, WGATE, CODE], _matrix(blob, wt[il, WGATE]), h, acts, fresh, gate, n_threads)
        project(mask, fns, wt[il, WUP, CODE], _matrix(blob, wt[il, WUP]), h, acts, fresh, up, n_threads)
        if gelu_table.shape[0] > 0:
            _geglu_tanh(fns, gate, up, gate, gelu_table)
        else:
            _swiglu(fns, gate, up, gate)
        fresh[:] = 0
        project(mask, fns, wt[il, WDOWN, CODE], _matrix(blob, wt[il, WDOWN]), gate, acts, fresh, blk, n_threads)
        if gemma:
            _norm(fns, blk, blk, norms[il, 3], eps)
        x += blk


@njit(cache=True)
def _act_scratch(n_rows, k_max):
    """Activation buffers for n_rows inputs of up to k_max features, one slab per format:
    codes (3, n_rows*k_max) int8, block scales and scale * sums (3, n_rows*k_max/32) f32,
    code sums int32 (matmul_table reshapes a slab to (rows, K))."""
    n, nb = n_rows * k_max, n_rows * (k_max // 32)
    return (np.empty((3, n), np.int8), np.empty((3, nb), np.float32), np.empty((3, nb), np.float32),
            np.empty((3, nb), np.int32))


@njit(cache=True, nogil=True)  # other threads (the server's I/O) run while a step computes
def forward_batch(mask, tokens, positions, seq, tables, slots, logit_rows, logits, blob, emb, embed_scale, head,
                  out_norm, wt, norms, head_norms, biases, kpool, vpool, windows, rope_bases, freq_factors, eps,
                  rope_dim, neox, rope_scale, query_scale, attn_softcap, gelu_table, n_head, n_split, n_threads, fns):
    """Embed tokens (T,) int64, run forward_layers, then the final norm and LM head of the
    rows logit_rows (R,) int64 into logits (R, V).

    emb, head: weight-table rows (OFF..ROW_BYTES) of the embedding and the output matrix;
    out_norm (D,) readonly f32. Every other argument is forward_layers'.
    """
    literally(mask)
    T = tokens.shape[0]
    D = norms.shape[2]
    x = np.empty((T, D), np.float32)  # (T, D) hidden states
    off, rb = emb[OFF], emb[ROW_BYTES]
    for t in range(T):
        tok = tokens[t]
        dequant_masked(mask, fns, emb[CODE], blob[off + tok * rb : off + (tok + 1) * rb], x[t])
    if embed_scale != 1.0:
        x *= embed_scale
    acts = _act_scratch(T, max(D, n_head * vpool.shape[4], wt[0, WGATE, ROWS]))
    forward_layers(mask, fns, x, blob, wt, norms, head_norms, biases, kpool, vpool, positions, seq, tables, slots,
                   windows, rope_bases, freq_factors, eps, rope_dim, neox, rope_scale, query_scale, attn_softcap,
                   gelu_table, n_head, n_split, n_threads, acts)
    R = logit_rows.shape[0]
    if R == 0:  # a prompt chunk whose logits nobody asked for never reaches the LM head
        return
    xr = np.empty((R, D), np.float32)  # (R, D) the rows that need logits
    for r in range(R):
        xr[r] = x[logit_rows[r]]
    h = np.empty((R, D), np.float32)  # (R, D)
    _norm(fns, h, xr, out_norm, eps)
    project(mask, fns, head[CODE], _matrix(blob, head), h, acts, np.zeros(3, np.int64), logits, n_threads)


class ForwardPlan:
    """The arrays forward_batch needs, built once per model from its weights' views."""

    def __init__(self, model, blob: np.ndarray):
        c, spec = model.cfg, model.spec
        self.cfg = c
        self._tables = {}  # KV dtype -> the leaf kernels' address table; the first run per dtype compiles
        wt = np.zeros((c.n_layer, len(MATS), 4), np.int64)  # (L, 7, 4) weight table
        for il, layer in enumerate(model.layers):
            for j, name in enumerate(MATS):
                wt[il, j] = self._table_row(getattr(layer, name), blob)
        self.blob, self.wt = blob, wt
        self.emb, self.head = (self._table_row(w, blob) for w in (model.tok_embd, model.output))
        self.mask = format_mask(list(wt[:, :, CODE].ravel()) + [self.head[CODE], self.emb[CODE]])
        if key_splits(1, SPLIT_MIN_KEYS, c.n_head_kv, numba.config.NUMBA_NUM_THREADS) > 1:
            self.mask |= SPLIT_ATTENTION  # only then is attention_split compiled in
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
        # forward_batch's per-model arguments, converted once (a decode token costs ~5 ms;
        # each np.float32(...) here would be a microsecond of it)
        self._weights = (self.blob, self.emb, np.float32(c.embed_scale), self.head, self.out_norm, self.wt,
                         self.norms, self.head_norms, self.biases)
        self._model_args = (self.windows, self.rope_bases, self.freq_factors, np.float32(c.rms_eps), c.rope_dim,
                            c.rope_neox, float(c.rope_scale), np.float32(c.query_scale),
                            np.float32(c.attn_softcap), self.gelu_table, c.n_head)

    @staticmethod
    def _table_row(w, blob: np.ndarray) -> np.ndarray:
        """(OFF, CODE, ROWS, ROW_BYTES) of a weight matrix inside the model file."""
        off = w.raw.ctypes.data - blob.ctypes.data
        assert 0 <= off and off + w.raw.nbytes <= blob.nbytes, "weight outside the model file"
        return np.array([off, w.fmt.code, w.shape[0], w.raw.shape[1]], np.int64)

    def _call_args(self, tokens, positions, seq, tables, slots, logit_rows, logits, pool, n_split, n_threads, fns):
        """forward_batch's arguments after the mask."""
        return (tokens, positions, seq, tables, slots, logit_rows, logits, *self._weights, pool.k, pool.v,
                *self._model_args, n_split, n_threads, fns)

    def signature(self, pool) -> tuple:
        """The numba types forward_batch is compiled for with this model and pool (prebuild
        compiles it beside the leaves)."""
        i32, i64 = np.zeros(1, np.int32), np.zeros(1, np.int64)
        args = self._call_args(i64, i32, i32, np.zeros((1, 1), np.int32), i64, i64,
                               np.zeros((1, self.vocab), np.float32), pool, 1, 1, np.zeros((1, 2), np.int64))
        return (types.literal(self.mask),) + tuple(numba.typeof(a) for a in args)

    def run(self, tokens: np.ndarray, positions: np.ndarray, seq: np.ndarray, tables: np.ndarray,
            slots: np.ndarray, logit_rows: np.ndarray, pool, n_split: int = 1) -> np.ndarray:
        """Logits (R, vocab) float32 of the rows logit_rows of a flattened batch, its keys and
        values written to pool (a kv_cache.KVPool).

        tokens (T,) int64 checked ids; positions (T,) int32; seq (T,) int32 and tables
        (S, max_blocks) int32: row t's block table; slots (T,) int64; logit_rows (R,) int64.
        """
        logits = np.empty((len(logit_rows), self.vocab), np.float32)  # (R, V)
        fns = self._tables.get(pool.k.dtype)
        with compile_lock() if fns is None else contextlib.nullcontext():
            if fns is None:  # a cold start compiles the kernels on every core first
                compile_leaves(self, pool)
                fns = self._tables[pool.k.dtype] = leaf_table(self, pool)
            call_with_mask(forward_batch, self.mask, *self._call_args(tokens, positions, seq, tables, slots,
                                                                       logit_rows, logits, pool, n_split,
                                                                       numba.get_num_threads(), fns))
        return logits
