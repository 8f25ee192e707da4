"""Model storage: `layout` (torch-free: directories, manifest, archives) and `models` (the
weights: save, load, predict). Import the submodules; this package imports nothing."""
