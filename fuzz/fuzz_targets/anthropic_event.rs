#![no_main]
// The body is relais::fuzz_entry::anthropic_event, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = relais::fuzz_entry::anthropic_event(data) {
        panic!("anthropic_event: {v}");
    }
});
