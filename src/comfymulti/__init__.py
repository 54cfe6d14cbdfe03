"""ComfyMulti: economical multi-user ComfyUI for workshops."""

__version__ = "0.1.0"
