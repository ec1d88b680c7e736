"""Configuration: the Config dataclass, its file, flags, values and checks."""
