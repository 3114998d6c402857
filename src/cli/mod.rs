//! The command line's own work, beside `serve`: `describe` over image folders.

pub mod describe;
