"""Files shipped with the package: the broker policy (symlinks to the top-level broker/)."""
