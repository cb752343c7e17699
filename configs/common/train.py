# Training options read by tools/train_net.py (same layout as detectron2's configs/common/train.py).
train = dict(
    output_dir="./output",
    init_checkpoint="",
    # key prefixes (e.g. "heads.sem.") that may be missing, unexpected or of another shape in
    # init_checkpoint when training starts from it: a new head when fine-tuning. Every other key
    # must match exactly (pe_panoptic/engine/checkpoint_io.py); never applies to --resume or --eval-only.
    init_checkpoint_allow_mismatch=[],
    max_iter=90000,
    # Mixed precision on CUDA or CPU; dtype "bf16" (default, no loss scaling) or "fp16".
    amp=dict(enabled=False, dtype="bf16"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    device="auto",  # cuda if available, else cpu
    # optimizer steps average the gradients of this many consecutive batches
    accumulate_steps=1,
    clip_grad_norm=None,
    seed=-1,
    # write <output_dir>/learning_curve.{json,png}: loss terms, instance-code diagnostics and the
    # val PQ / PQ_th / PQ_st of every evaluation (pe_panoptic/engine/learning_curve.py)
    learning_curve=False,
)
