"""Bad input to export or predict: the message names the directory, file or option and what was expected.
A ConfigError, so the CLI prints it on one line and exits 2 like every other bad input."""
from __future__ import annotations

from nmtrec.components.common.config import ConfigError


class ServeError(ConfigError):
    """A checkpoint, dataset or exported model that cannot be exported or served."""
