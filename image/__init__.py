"""Image build: layout (pure), seal (partitions, manifest), build (the command)."""
