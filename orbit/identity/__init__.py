"""Identity: users, projects, roles and tokens (Keystone-v3-style)."""
