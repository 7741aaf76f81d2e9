"""Exit codes and the one exception type every engine failure is raised as.

The numbers are Taler's (src/include/platform.h) so that scripts and systemd
units written for the Taler tools read our exit codes the same way.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALIDARGUMENT = 2
EXIT_NOPERMISSION = 4      # Taler uses it for "could not create"
EXIT_NOTINSTALLED = 5      # database not reachable, not initialised or outdated
EXIT_NOTCONFIGURED = 6     # configuration missing or malformed


class TalerOpsError(Exception):
    """A failure with the exit code the CLI should end with."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(TalerOpsError):
    exit_code = EXIT_NOTCONFIGURED


class DatabaseNotReady(TalerOpsError):
    """Unreachable server, missing schema or pending patches."""

    exit_code = EXIT_NOTINSTALLED


class CreateError(TalerOpsError):
    exit_code = EXIT_NOPERMISSION


class UsageError(TalerOpsError):
    exit_code = EXIT_INVALIDARGUMENT
