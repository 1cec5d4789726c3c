"""Data from elsewhere, shipped with the package (each file with its source in ``SOURCE.md``)."""
