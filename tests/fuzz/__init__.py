"""Fuzz campaigns: random guests and malformed images; short runs in CI, long runs by hand."""
