"""Model presets for `lifecycle pretrain --preset NAME`: Llama-architecture shapes sized for a CPU."""

PRESETS: dict[str, dict] = {
    # ~0.5M parameters: learns 2-digit addition to >90% held-out exact match in a few CPU minutes.
    "tiny-arith": dict(
        hidden_size=96,
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
