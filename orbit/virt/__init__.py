"""The hypervisor seam: a narrow driver Protocol, its libvirt implementation and a fake."""
