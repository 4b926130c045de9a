"""An app that answers prompts through one process-wide apiexec executor."""
