"""Live migration: the phase state machine, the pure post-copy policy, the engine."""
