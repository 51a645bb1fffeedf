#![no_main]
//! See `hookline_fuzz::verify`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookline_fuzz::verify(data));
