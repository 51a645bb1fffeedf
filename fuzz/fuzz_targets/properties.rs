#![no_main]
//! See `hookline_fuzz::properties`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::properties(data));
