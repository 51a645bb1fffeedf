#![no_main]
//! See `hookline_fuzz::normalize`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::normalize(data));
