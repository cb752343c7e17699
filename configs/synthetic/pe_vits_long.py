# The demo recipe (configs/synthetic/pe_vits.py: the paper's head, paper_v1's no-void switch, the
# semantic void source, head lr x4) for 1200 iterations: about 19 minutes of training on a 2-core CPU.
# Measured (docs/experiments.md "The paper's head in the demo"): val PQ 77.8 / PQ_th 63.3 / PQ_st 97.2
# (PQ_th 22.7 -> 53.6 -> 62.0 -> 63.3 at 300 / 600 / 900 / 1200), train split PQ 78.5 / PQ_th 64.4:
# the model fits and generalizes alike.
from .pe_vits import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.max_iter = 1200
train.eval_period = 300
train.checkpointer = dict(period=300, max_to_keep=2)
train.output_dir = "output/vits_long"
