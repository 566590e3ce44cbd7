"""The run history: SQLite plus weights files (store), reading and writing weights safely (weights), rebuilding a stored run's models (rebuild)."""
