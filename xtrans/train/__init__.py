"""Training: configs, run state, checkpoints, learning-rate schedule and the training loop."""
