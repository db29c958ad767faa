"""Logical axis names: the one vocabulary shared by model code and sharding rules.

The model annotates every parameter and large activation with these names; `sharding.py`
maps them to mesh axes (data / fsdp / tensor) through rule tables kept in the config.
"""

BATCH = "batch"        # examples
LENGTH = "length"      # sequence positions
EMBED = "embed"        # hidden_size
HEADS = "heads"        # attention heads
KV = "kv"              # per-head dimension
MLP = "mlp"            # intermediate_size
VOCAB = "vocab"        # word-piece vocabulary
POSITIONS = "positions"  # position / segment embedding rows (small, replicated)
LABELS = "labels"      # classifier outputs (small, replicated)
LAYERS = "layers"      # stacked layers under nn.scan
PREDICTIONS = "predictions"  # masked positions per row
