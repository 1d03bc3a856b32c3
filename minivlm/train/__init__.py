"""Training on a laptop: one generic loop (loop.py) and recipes that plug into it.

    loop.py          train(model, batches, loss_fn, TrainConfig) -> History; accumulation, bf16
    batches.py       which micro-batches each rank trains on (BatchStream, ShardedBatches)
    checkpointing.py atomic, verified checkpoints and exact resume
    distributed.py   torchrun / DDP: the process group, the wrapper, rank 0
    schedule.py      warmup + cosine learning rate
    progress.py      the progress bar (stderr, no tqdm)
    plot.py          the loss curve PNG
    export.py        save a trained model as a HF folder that weights_convert loads back
    dual_encoder.py  the CLIP / SigLIP recipe on the shapes world
    llava_json.py    LLaVA on your own LLaVA-format JSON + images, from any LLaVA folder
"""
from .export import save_pretrained
from .loop import History, TrainConfig, to_device, train
from .plot import save_loss_curve
from .schedule import warmup_cosine
