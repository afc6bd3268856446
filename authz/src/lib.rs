//! Istio authorization policy model and evaluation (placeholder until the engine lands).
#![forbid(unsafe_code)]
