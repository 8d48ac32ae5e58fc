"""Training: the layer between models and evaluation (docs/architecture.md).

- loop.py: the training loop every model type shares (optimizer, schedule, precision, DDP, checkpoints, validation)
- distributed.py: processes started by torchrun / accelerate launch
- common.py: what the trainers share besides the loop (TrainResult, train_result, freeze_lower_layers, token_lengths)
- cross_encoder.py: listwise fine-tuning of the cross-encoder
- two_tower.py: fine-tuning the two-tower model
- hybrid.py: training the hybrid
- blend.py: choosing how the hybrid's parts are blended, on held-out consumptions
"""
