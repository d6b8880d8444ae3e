"""Model presets for `lifecycle pretrain --preset NAME`: Llama-architecture shapes sized for a CPU."""

PRESETS: dict[str, dict] = {
    # ~0.66M parameters: learns 2-digit addition to >95% held-out exact match in a few CPU minutes.
    # Shaped for the quantized runtimes: head size 32 (onnxruntime's CPU GroupQueryAttention needs a
    # multiple of 16) and every Linear in/out width a multiple of 64 (128, 64 for k/v, 256), which
    # bitsandbytes' CPU NF4 blocks (64), GGUF Q8_0/Q4_0 blocks (32) and ORT MatMulNBits blocks divide.
    # 8 heads of 16 were tried first: the base then answered "Q: ... A:" sums across the gap 12-40% of
    # the time and chat fine-tuning inherited the gap (4 heads of 32: 84-89% at lr 3e-3, 100% at the
    # pretrain defaults of 3000 steps at 2e-3).
    "tiny-arith": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    ),
    # A smaller shape for tests: same architecture, a fraction of the compute.
    "micro": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10000.0,
    ),
}
