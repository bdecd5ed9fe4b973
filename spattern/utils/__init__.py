"""Bottom-layer utilities every layer may use: errors, atomic/strict-JSON files, environment
capture, typed TOML configs. Nothing here imports another spattern module."""
