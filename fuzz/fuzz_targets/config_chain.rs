#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmgate_fuzz::config_chain(data));
