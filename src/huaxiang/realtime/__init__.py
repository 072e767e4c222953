"""The real-time engine: tags and audiences kept current event by event, and their changes."""
