"""Import llama-family GGUF files as mlx-lm model folders."""

from .importer import GGUFImportError, import_gguf

__all__ = ["GGUFImportError", "import_gguf"]
