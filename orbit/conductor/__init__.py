"""The conductor: runs migrations with the engine and keeps the inventory in sync."""
