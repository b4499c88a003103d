#![no_main]
// The body is relais::fuzz_entry::sse_decoder, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = relais::fuzz_entry::sse_decoder(data) {
        panic!("sse_decoder: {v}");
    }
});
