//! Performance figures (work in progress).
fn main() {}
