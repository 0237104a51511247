"""Error types that the CLI turns into one clear line on stderr."""


class LocalLLMError(Exception):
    """Base for every error a user can cause (bad file, bad input, missing model)."""

    exit_code = 1


class UsageError(LocalLLMError):
    """The call itself is wrong: bad option value, unknown model name."""

    exit_code = 2


class GGUFError(LocalLLMError):
    """A GGUF file is malformed, truncated or unsupported."""


class ModelNotFound(LocalLLMError):
    """A model name is neither a catalogue entry nor an existing file."""

    exit_code = 2


class DownloadError(LocalLLMError):
    """Fetching or verifying a model failed."""


class ContextOverflow(LocalLLMError):
    """A prompt does not fit in the context window."""


class ArgumentError(UsageError, TypeError):
    """An API argument has the wrong type (a usage error for the CLI, a TypeError for Python)."""


class ArgumentValueError(UsageError, ValueError):
    """An API argument has the right type but an impossible value, such as a token id out of range."""


class NotEnoughMemory(LocalLLMError, MemoryError):
    """An allocation (the KV cache) would not fit in this machine's available memory."""
