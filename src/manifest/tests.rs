//! End-to-end tests of the manifest pipeline on in-memory files.
