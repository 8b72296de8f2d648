"""The networks as plain PyTorch modules: no I/O, no downloads, inference only."""
