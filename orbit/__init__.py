"""ORBIT: a live-migration control plane for QEMU/KVM clouds, post-copy first."""

__version__ = "0.1.0"
