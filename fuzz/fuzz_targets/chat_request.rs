#![no_main]
// The body is relais::fuzz_entry::chat_request, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = relais::fuzz_entry::chat_request(data) {
        panic!("chat_request: {v}");
    }
});
