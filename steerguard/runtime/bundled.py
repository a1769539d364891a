"""The name of the bundled model, in a module of its own: the CLI names it as a default
without importing torch (steerguard.runtime.loading loads it)."""

BUNDLED = "smollm2-135m"
