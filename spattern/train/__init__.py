"""One training loop for every model, pattern and corpus; text generation."""
from .config import load_config
from .generate import chat_prompt, generate
from .loop import evaluate, load_checkpoint, lr_at, train

__all__ = ["load_config", "chat_prompt", "generate", "evaluate", "load_checkpoint", "lr_at", "train"]
