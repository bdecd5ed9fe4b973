"""The experiment config the experiment tests share: a random tiny NeoX model on three stdlib
documents at 128 tokens (``name`` and the sweep are each test's own)."""

TINY = """
name = "{name}"
results = "{{results}}"
baseline = "dense"
[setup]
model = "random:neox-tiny"
corpus = "stdlib"
context = 128
block = [32, 32]
docs = 3
metrics = ["perplexity", "info_loss"]
"""


def tiny_config(name: str, sweep: str) -> str:
    """The shared setup, then ``sweep`` (TOML from ``[sweep]`` on); ``{results}`` left to format."""
    return TINY.format(name=name) + sweep
