"""llmrec: fine-tune pretrained language models into recommenders, as a production workflow."""

__version__ = "0.1.0"
