#![no_main]
// The body is relais::fuzz_entry::count_tokens_request, shared with tests/fuzz_corpus.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(v) = relais::fuzz_entry::count_tokens_request(data) {
        panic!("count_tokens_request: {v}");
    }
});
