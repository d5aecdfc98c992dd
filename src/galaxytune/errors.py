"""Errors a user can cause. The command line prints their message alone, without a traceback."""


class GalaxytuneError(Exception):
    """Base class: the message names the file or setting at fault and what to do."""


class ConfigError(GalaxytuneError):
    pass


class DataError(GalaxytuneError):
    pass


class ModelError(GalaxytuneError):
    pass
