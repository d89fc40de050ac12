//! The mining examples end to end, plus the unit tests that live beside
//! their code in examples/mining/ (the `#[cfg(test)]` modules there run as
//! part of this binary: `cargo test --test mining`).

// Shared with the mining programs and the demo; the tests do not use all of it.
#[allow(dead_code)]
#[path = "../examples/mining/mod.rs"]
mod mining;
