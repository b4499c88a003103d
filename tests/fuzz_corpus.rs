//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`: the seeds, and every input a fuzzer
//! found that crashed or broke an invariant) through the same entry points the fuzz targets
//! call, as ordinary tests on stable. Fuzzing itself: `scripts/fuzz.sh` (docs/fuzzing.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::{Path, PathBuf};

use relais::fuzz_entry::{Target, TARGETS};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

fn replay(name: &str, target: Target) {
    let dir = corpus_dir().join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{name}: no corpus in {}", dir.display());
    for f in files {
        let data = std::fs::read(&f).unwrap();
        if let Err(v) = target(&data) {
            panic!("{name}: {} breaks an invariant: {v}", f.display());
        }
    }
}

macro_rules! corpus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let target = TARGETS
                    .iter()
                    .find(|(n, _)| *n == stringify!($name))
                    .map(|(_, t)| *t)
                    .expect("listed in fuzz_entry::TARGETS");
                replay(stringify!($name), target);
            }
        )*

        /// Every target has a test here, and every corpus folder a target.
        #[test]
        fn every_target_is_replayed() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in TARGETS {
                assert!(tested.contains(name), "{name}: add it to corpus_tests!");
            }
            for e in std::fs::read_dir(corpus_dir()).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                assert!(TARGETS.iter().any(|(t, _)| *t == n), "fuzz/corpus/{n} names no target");
            }
        }
    };
}

corpus_tests!(
    messages_request,
    count_tokens_request,
    chat_request,
    responses_request,
    sse_decoder,
    chat_completion,
    anthropic_message,
    chat_chunk,
    anthropic_event,
    chat_to_anthropic_stream,
    anthropic_to_chat_stream,
    chat_to_responses_stream,
    chat_relay_stream,
    anthropic_passthrough_stream,
    config,
);
