"""Training: the paper's schedule, checkpoints that resume exactly, DDP and mixed precision."""
