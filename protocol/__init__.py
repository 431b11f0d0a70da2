"""Sans-IO protocol code for kdc-trio: bytes in, events out. Imports no I/O library."""
