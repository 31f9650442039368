"""The engine's vocabulary: settings, progress samples and decisions.

Settings are resolved once per migration and frozen (STYLE 4): a migration record says
exactly which policy it ran under. Samples are libvirt's job statistics normalised to
bytes and seconds. A Decision is what the pure policy returns: an action and a reason a
human can read in the migration record.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orbit.errors import ConfigError

MIB = 1024 * 1024

#: Defaults, overridable per migration.
DEFAULT_POST_COPY_AFTER_ITERATIONS = 1  # the seed's behaviour
DEFAULT_COMPLETION_TIMEOUT_S = 300.0
DEFAULT_DOWNTIME_LIMIT_MS = 300
#: no bytes moved for this long means the link (or a daemon) is gone: see policy.stalled_for_s
DEFAULT_STALL_TIMEOUT_S = 20.0
#: post-copy always moves bytes (pages on demand and in the background), so this long
#: without any means its stream is dead; pausing is cheap and recoverable, hence short
DEFAULT_POSTCOPY_STALL_S = 2.0
MAX_POST_COPY_AFTER_ITERATIONS = 100
#: auto: each second in post-copy counts 1 + this many seconds (see orbit/migration/predict.py)
DEFAULT_POSTCOPY_WEIGHT = 1.0
MAX_POSTCOPY_WEIGHT = 1000.0


class Policy(StrEnum):
    """When (if ever) a migration switches from pre-copy to post-copy."""

    PRECOPY = "precopy"  # never switch; abort at the completion timeout
    POSTCOPY = "postcopy"  # switch after N completed memory iterations
    AUTO = "auto"  # the strategy with the least predicted score (predict.py), then evidence


class Action(StrEnum):
    CONTINUE = "continue"
    SWITCH_TO_POSTCOPY = "switch-to-postcopy"
    ABORT = "abort"
    PAUSE_AND_COMPLETE = "pause-and-complete"
    #: auto's strategy, chosen from measured rates before the migration starts
    PLAN = "plan"
    #: post-copy stalled: pause it (recoverable) so that it can be resumed
    PAUSE_POSTCOPY = "pause-postcopy"
    #: resume a paused (failed) post-copy
    RESUME_POSTCOPY = "resume-postcopy"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    #: which rule of the policy decided (orbit/migration/policy.py), e.g. 'first-pass'
    rule: str = ""


@dataclass(frozen=True)
class MigrationSettings:
    """How one migration runs. Build with :meth:`resolve`, which validates and fills defaults.

    ``post_copy`` says whether post-copy is *permitted* (the API's ``post_copy`` flag);
    ``policy`` decides when to use it. Without post-copy, the policy is always ``precopy``.
    """

    post_copy: bool = False
    policy: Policy = Policy.PRECOPY
    post_copy_after_iterations: int = DEFAULT_POST_COPY_AFTER_ITERATIONS
    completion_timeout_s: float = DEFAULT_COMPLETION_TIMEOUT_S
    downtime_limit_ms: int = DEFAULT_DOWNTIME_LIMIT_MS
    bandwidth_mib_s: int = 0  # 0 = unlimited
    block_migration: bool = False
    #: no progress for this long: abort pre-copy (the VM stays on the source)
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    #: no progress in post-copy for this long: pause it, to resume when the link answers
    postcopy_stall_s: float = DEFAULT_POSTCOPY_STALL_S
    #: resume a broken post-copy automatically (with back-off) until it completes
    auto_resume: bool = True
    #: auto's objective: score = total time + this x time in post-copy
    postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT

    @classmethod
    def resolve(
        cls,
        *,
        post_copy: bool = False,
        policy: Policy | str | None = None,
        post_copy_after_iterations: int | None = None,
        completion_timeout_s: float = DEFAULT_COMPLETION_TIMEOUT_S,
        downtime_limit_ms: int = DEFAULT_DOWNTIME_LIMIT_MS,
        bandwidth_mib_s: int = 0,
        block_migration: bool = False,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
        postcopy_stall_s: float = DEFAULT_POSTCOPY_STALL_S,
        auto_resume: bool = True,
        postcopy_weight: float = DEFAULT_POSTCOPY_WEIGHT,
    ) -> MigrationSettings:
        """Validate the request and fill defaults.

        - no post-copy: policy ``precopy`` (asking for another is an error);
        - post-copy and ``post_copy_after_iterations`` given: policy ``postcopy``;
        - post-copy and nothing else: policy ``auto``.
        """
        try:
            chosen = Policy(policy) if policy is not None else None
        except ValueError as err:
            names = ", ".join(p.value for p in Policy)
            raise ConfigError(f"migration_policy must be one of {names}, got {policy!r}") from err
        if post_copy_after_iterations is not None and not (
            0 <= post_copy_after_iterations <= MAX_POST_COPY_AFTER_ITERATIONS
        ):
            raise ConfigError(
                f"post_copy_after_iterations must be 0..{MAX_POST_COPY_AFTER_ITERATIONS}, "
                f"got {post_copy_after_iterations}"
            )
        if not post_copy:
            if chosen not in (None, Policy.PRECOPY):
                raise ConfigError(f"migration_policy {chosen.value!r} needs post_copy=true")
            if post_copy_after_iterations is not None:
                raise ConfigError("post_copy_after_iterations needs post_copy=true")
            chosen = Policy.PRECOPY
        elif chosen is None:
            chosen = Policy.POSTCOPY if post_copy_after_iterations is not None else Policy.AUTO
        elif chosen is not Policy.POSTCOPY and post_copy_after_iterations is not None:
            raise ConfigError(
                f"post_copy_after_iterations applies to migration_policy 'postcopy', "
                f"not {chosen.value!r}"
            )
        if completion_timeout_s <= 0:
            raise ConfigError(f"completion timeout must be > 0 s, got {completion_timeout_s}")
        if downtime_limit_ms <= 0:
            raise ConfigError(f"downtime limit must be > 0 ms, got {downtime_limit_ms}")
        if stall_timeout_s <= 0:
            raise ConfigError(f"stall timeout must be > 0 s, got {stall_timeout_s}")
        if postcopy_stall_s <= 0:
            raise ConfigError(f"post-copy stall timeout must be > 0 s, got {postcopy_stall_s}")
        if not 0 <= postcopy_weight <= MAX_POSTCOPY_WEIGHT:
            raise ConfigError(
                f"post-copy weight must be 0..{MAX_POSTCOPY_WEIGHT:.0f}, got {postcopy_weight}"
            )
        if bandwidth_mib_s < 0:
            raise ConfigError(
                f"bandwidth must be >= 0 MiB/s (0 = unlimited), got {bandwidth_mib_s}"
            )
        return cls(
            post_copy=post_copy,
            policy=chosen,
            post_copy_after_iterations=(
                DEFAULT_POST_COPY_AFTER_ITERATIONS
                if post_copy_after_iterations is None
                else post_copy_after_iterations
            ),
            completion_timeout_s=completion_timeout_s,
            downtime_limit_ms=downtime_limit_ms,
            bandwidth_mib_s=bandwidth_mib_s,
            block_migration=block_migration,
            stall_timeout_s=stall_timeout_s,
            postcopy_stall_s=postcopy_stall_s,
            auto_resume=auto_resume,
            postcopy_weight=postcopy_weight,
        )


@dataclass(frozen=True)
class Sample:
    """One reading of the migration job's progress, normalised to bytes and seconds.

    ``iteration`` is QEMU's memory sync count as libvirt reports it (``memory_iteration``):
    1 while the first pass over RAM is running, so ``iteration - 1`` passes are complete.
    ``dirty_rate_bytes_s`` is 0 until QEMU has measured it (after the first pass).
    """

    elapsed_s: float
    memory_total_bytes: int = 0
    memory_processed_bytes: int = 0
    memory_remaining_bytes: int = 0
    dirty_rate_bytes_s: int = 0
    bandwidth_bytes_s: int = 0
    iteration: int = 0
    postcopy: bool = False
    postcopy_requests: int = 0
    disk_total_bytes: int = 0
    disk_processed_bytes: int = 0
    disk_remaining_bytes: int = 0

    @property
    def completed_iterations(self) -> int:
        return max(0, self.iteration - 1)
