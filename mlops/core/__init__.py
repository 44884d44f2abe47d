"""What every layer uses: errors, file I/O, configs and plugin loading, the model interface, metrics,
statistics and the model-folder format. Imports nothing above it."""
