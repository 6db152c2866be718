"""User-facing errors: one line that names the file and the problem."""


class WmhflowError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""


class InputError(WmhflowError):
    """A bad input file: ``InputError(path, problem)`` reads ``<path>: <problem>``."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(WmhflowError):
    """A bad configuration value: ``ConfigError(key, problem)`` reads ``config '<key>': <problem>``."""

    def __init__(self, key, problem):
        self.key = key
        self.problem = problem
        super().__init__(f"config '{key}': {problem}")
