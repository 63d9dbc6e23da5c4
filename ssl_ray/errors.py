"""The errors ssl_ray raises on purpose.

Every one of them carries a message meant for a person: the CLI prints it as a single
`error: ...` line and exits non-zero, without a traceback.
"""


class SslRayError(Exception):
    """Base class: an expected failure with a human-readable message."""


class ConfigError(SslRayError):
    """The configuration is invalid (unknown key, wrong type, out-of-range value)."""


class StorageError(SslRayError):
    """A storage location is unreachable, missing, or refuses the credentials."""


class DatasetError(SslRayError):
    """A dataset (data.yaml, label file, image) is malformed."""


class ResourceError(SslRayError):
    """The cluster cannot (or did not in time) provide what a stage asks for."""


class LabelError(SslRayError):
    """The label stage ran but its result is not acceptable (e.g. too many rejects)."""
