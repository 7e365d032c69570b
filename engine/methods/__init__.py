"""One package per method; ``engine.methods.base.registry()`` discovers those that declare ``METHOD``."""
