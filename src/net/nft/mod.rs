//! Placeholder: filled in by the networking work of issue 6.
