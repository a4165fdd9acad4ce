//! Test harness for the spec suite.
