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
