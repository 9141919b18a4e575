"""Infrastructure every stage shares: atomic file I/O and NIfTI reading, folder locks, the console,
devices, errors and the workspace memory. Nothing here knows about MRI methods."""
