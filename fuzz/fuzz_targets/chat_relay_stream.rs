#![no_main]
// The body is relais::fuzz_entry::chat_relay_stream, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = relais::fuzz_entry::chat_relay_stream(data) {
        panic!("chat_relay_stream: {v}");
    }
});
