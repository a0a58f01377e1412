"""Training: the optimizer (Sapiens recipe), trainable subsets, the sharded train step, the loop."""
