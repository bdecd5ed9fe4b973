"""One training loop for every model, pattern and corpus; text generation."""
from .config import TrainConfig, load_train_config
from .generate import chat_prompt, generate
from .loop import evaluate, load_checkpoint, lr_at, train

__all__ = ["TrainConfig", "load_train_config", "chat_prompt", "generate", "evaluate", "load_checkpoint", "lr_at",
           "train"]
