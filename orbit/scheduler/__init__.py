"""Scheduling: where a VM goes when the operator names no destination."""
