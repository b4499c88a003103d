#![no_main]
// The body is relais::fuzz_entry::anthropic_passthrough_stream, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = relais::fuzz_entry::anthropic_passthrough_stream(data) {
        panic!("anthropic_passthrough_stream: {v}");
    }
});
