"""Training IRMs: the run config and presets (``config``), losses, the training loop (``train``),
run directories and checkpoints (``runs``), one writer per run (``runlock``), sweeps, torchrun
(``distributed``), and memory planning (``plan``, ``memory``)."""
