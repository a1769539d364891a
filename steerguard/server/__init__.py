"""`steerguard serve`: an OpenAI-compatible HTTP server over the composition root."""
