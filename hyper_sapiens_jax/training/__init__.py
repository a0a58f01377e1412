"""Training: the optimizer (Sapiens recipe), trainable subsets, the sharded train step, the objective,
checkpoints and the run engine (``trainer.Trainer``) the fine-tuning jobs drive."""
