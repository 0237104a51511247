"""gemma3 family.

Facts checked against llama.cpp's reference logits:
- norm weights in the GGUF already include Gemma's +1, so every norm is plain RMSNorm;
- embeddings are scaled by sqrt(n_embd);
- Q and K get an RMSNorm over head_dim before RoPE, then Q is scaled by 1/sqrt(key_length);
- NEOX RoPE, base rope.freq_base on global layers and freq_base_swa (default 10000) on sliding ones;
- layer il slides (window attention.sliding_window) unless il % 6 == 5;
- x + post_attn_norm(attn(attn_norm(x))), then x + post_ffw_norm(ffn(ffn_norm(x)));
- FFN is down(gelu_tanh(gate(x)) * up(x)); the output head is tied to token_embd.
"""

from .spec import ArchSpec

SPEC = ArchSpec(name="gemma3", rope_neox=True, activation="gelu_tanh", gemma_style=True)
