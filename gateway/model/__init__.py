"""Pure DICOM model code shared by both fronts and every backend (no I/O here)."""
