"""The REST API: Keystone-v3-style identity and a Nova-compatible compute subset."""
