//! Shared helpers for hoop end-to-end tests.
