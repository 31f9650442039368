"""ORBIT's one exception tree.

Every error that ORBIT raises on purpose derives from :class:`OrbitError`, so a caller
(the CLI, later the API) can catch the root and show ``str(err)``: one readable line, never
a traceback. Lower-layer errors (a failed ``ip`` command, a libvirt error) are mapped to
the most specific class here with ``raise Mapped(...) from err``, so the root cause is kept.

::

    OrbitError
     +-- ConfigError            bad input from the user (a flag, an argument)
     +-- LabError               the lab test-bed could not do what was asked
     |    +-- LabStateError     the lab is (not) up, or its state is inconsistent
     |    +-- HostNotFound      no lab host of that name
     |    +-- CommandFailed     an external command (ip, tc, qemu-img) failed
     +-- GuestError             the test guest could not be defined, started or read
"""

from __future__ import annotations


class OrbitError(Exception):
    """Root of every error ORBIT raises on purpose; ``str()`` is one readable line."""


class ConfigError(OrbitError):
    """Bad input from the user: an option out of range, a missing argument."""


class LabError(OrbitError):
    """The lab test-bed could not do what was asked."""


class LabStateError(LabError):
    """The lab is already up, not up, or its state file disagrees with the machine."""


class HostNotFound(LabError):
    """No lab host of that name."""


class CommandFailed(LabError):
    """An external command (ip, tc, qemu-img, ...) exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        first_line = next((ln for ln in stderr.splitlines() if ln.strip()), "no output")
        super().__init__(f"command '{' '.join(argv)}' failed (exit {returncode}): {first_line}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class GuestError(OrbitError):
    """The test guest could not be defined, started, found or read."""
