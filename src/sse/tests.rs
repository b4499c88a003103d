use super::*;
use crate::anthropic::{BlockDelta, DeltaUsage, MessageDeltaBody, StopReason};

/// Feeds `input` in pieces of `step` bytes and collects (event, data, raw) of every event,
/// including the one `finish` may flush.
fn decode(input: &[u8], step: usize) -> Vec<(Option<String>, String, Vec<u8>)> {
    let mut dec = SseDecoder::new();
    let mut out = Vec::new();
    let mut collect = |ev: SseEvent| {
        out.push((
            ev.event().map(str::to_owned),
            ev.data_str().unwrap().to_owned(),
            ev.raw().to_vec(),
        ))
    };
    for piece in input.chunks(step.max(1)) {
        dec.push(piece);
        while let Some(ev) = dec.next_event().unwrap() {
            collect(ev);
        }
    }
    if let Some(ev) = dec.finish().unwrap() {
        collect(ev);
    }
    out
}

fn events(input: &[u8]) -> Vec<(Option<String>, String)> {
    let whole: Vec<_> = decode(input, input.len())
        .into_iter()
        .map(|(e, d, _)| (e, d))
        .collect();
    // Every split must decode to the same events as the whole input.
    for step in [1, 2, 3, 7] {
        let split: Vec<_> = decode(input, step)
            .into_iter()
            .map(|(e, d, _)| (e, d))
            .collect();
        assert_eq!(split, whole, "split every {step} bytes");
    }
    whole
}

fn ev(event: Option<&str>, data: &str) -> (Option<String>, String) {
    (event.map(str::to_owned), data.to_owned())
}

#[test]
fn line_endings_lf_crlf_cr_and_mixed() {
    let expected = vec![ev(Some("a"), "1"), ev(None, "2")];
    assert_eq!(events(b"event: a\ndata: 1\n\ndata: 2\n\n"), expected);
    assert_eq!(
        events(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"),
        expected
    );
    assert_eq!(events(b"event: a\rdata: 1\r\rdata: 2\r\r"), expected);
    assert_eq!(events(b"event: a\r\ndata: 1\n\rdata: 2\r\n\n"), expected);
}

#[test]
fn crlf_split_between_cr_and_lf_is_one_line_end() {
    // If the LF after a split CR were a line of its own, the first frame would end early
    // (dropping `data: 1`'s event name) or a phantom blank line would appear.
    let mut dec = SseDecoder::new();
    dec.push(b"event: a\r");
    assert_eq!(dec.next_event().unwrap(), None);
    dec.push(b"\ndata: 1\r");
    assert_eq!(dec.next_event().unwrap(), None);
    dec.push(b"\n\r");
    let first = dec.next_event().unwrap().unwrap();
    assert_eq!(first.event(), Some("a"));
    assert_eq!(first.data(), b"1");
    assert_eq!(&first.raw()[..], b"event: a\r\ndata: 1\r\n\r");
    dec.push(b"\ndata: 2\r\n\r\n");
    let second = dec.next_event().unwrap().unwrap();
    assert_eq!(second.event(), None);
    assert_eq!(&second.raw()[..], b"data: 2\r\n\r\n");
    assert_eq!(dec.next_event().unwrap(), None);
}

#[test]
fn multi_line_data_is_joined_with_newlines() {
    assert_eq!(
        events(b"data: a\ndata:b\ndata\ndata:  c\n\n"),
        vec![ev(None, "a\nb\n\n c")]
    );
}

#[test]
fn comments_id_retry_and_unknown_fields_are_ignored() {
    let input =
        b": keep-alive\n\n:\nid: 7\nretry: 1000\nfoo: bar\ndata: x\n: mid-frame comment\n\n";
    assert_eq!(events(input), vec![ev(None, "x")]);
}

#[test]
fn frames_without_data_are_not_dispatched() {
    assert_eq!(
        events(b"event: ping\n\n\n\ndata: y\n\n"),
        vec![ev(None, "y")]
    );
}

#[test]
fn empty_event_name_means_message() {
    assert_eq!(events(b"event:\ndata: z\n\n"), vec![ev(None, "z")]);
}

#[test]
fn last_event_name_wins_and_is_per_frame() {
    assert_eq!(
        events(b"event: a\nevent: b\ndata: 1\n\ndata: 2\n\n"),
        vec![ev(Some("b"), "1"), ev(None, "2")]
    );
}

#[test]
fn only_one_space_after_colon_is_stripped() {
    assert_eq!(events(b"data:   x \n\n"), vec![ev(None, "  x ")]);
}

#[test]
fn leading_bom_is_skipped_even_when_split() {
    assert_eq!(events(b"\xEF\xBB\xBFdata: 1\n\n"), vec![ev(None, "1")]);
}

#[test]
fn raw_frames_concatenate_back_to_the_input() {
    let input: &[u8] =
        b": hi\n\nevent: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\n";
    for step in [1, 5, input.len()] {
        let raw: Vec<u8> = decode(input, step).into_iter().flat_map(|e| e.2).collect();
        // The comment-only frame is dropped; everything after it is reproduced exactly.
        assert_eq!(raw, &input[6..], "step {step}");
    }
}

#[test]
fn single_data_line_is_a_slice_of_raw() {
    let mut dec = SseDecoder::new();
    dec.push(b"data: hello\n\n");
    let ev = dec.next_event().unwrap().unwrap();
    let raw = ev.raw().as_ptr() as usize;
    let data = ev.data().as_ptr() as usize;
    assert!(
        data >= raw && data < raw + ev.raw().len(),
        "data was copied"
    );
}

#[test]
fn done_sentinel() {
    let mut dec = SseDecoder::new();
    dec.push(b"data: [DONE]\n\ndata: {\"x\":\"[DONE]\"}\n\n");
    assert!(dec.next_event().unwrap().unwrap().is_done());
    assert!(!dec.next_event().unwrap().unwrap().is_done());
}

#[test]
fn finish_flushes_an_unterminated_last_event() {
    assert_eq!(decode(b"data: 1\n\ndata: [DONE]", 3).len(), 2);
    assert_eq!(decode(b"data: [DONE]\n", 1)[0].1, "[DONE]");
    // Nothing but a comment or a partial field name: nothing to flush.
    assert!(decode(b": bye", 1).is_empty());
    assert!(decode(b"", 1).is_empty());
}

#[test]
fn oversized_event_is_an_error_and_stays_one() {
    let mut dec = SseDecoder::with_max_event_size(32);
    dec.push(b"data: ");
    assert_eq!(dec.next_event().unwrap(), None);
    dec.push(&[b'x'; 40]);
    let err = SseError::EventTooLarge { limit: 32 };
    assert_eq!(dec.next_event(), Err(err.clone()));
    dec.push(b"\n\n");
    assert_eq!(dec.next_event(), Err(err.clone()));
    assert_eq!(dec.finish(), Err(err));
}

#[test]
fn oversized_complete_event_is_an_error() {
    let mut dec = SseDecoder::with_max_event_size(16);
    dec.push(b"data: 0123456789abcdef\n\n");
    assert!(dec.next_event().is_err());
}

#[test]
fn many_small_events_do_not_trip_the_limit() {
    let mut dec = SseDecoder::with_max_event_size(16);
    let mut n = 0;
    for _ in 0..100 {
        dec.push(b"data: 12345\n\n");
        while dec.next_event().unwrap().is_some() {
            n += 1;
        }
    }
    assert_eq!(n, 100);
}

#[test]
fn endless_comments_without_a_blank_line_trip_the_limit() {
    let mut dec = SseDecoder::with_max_event_size(64);
    let mut failed = false;
    for _ in 0..100 {
        dec.push(b": padding\n");
        if dec.next_event().is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed);
}

#[test]
fn encode_event_writes_name_and_compact_json() {
    let ev = StreamEvent::ContentBlockDelta {
        index: 2,
        delta: BlockDelta::TextDelta {
            text: "a\nb \"q\"".into(),
        },
    };
    assert_eq!(
        &encode_event(&ev)[..],
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\
          \"delta\":{\"type\":\"text_delta\",\"text\":\"a\\nb \\\"q\\\"\"}}\n\n"
    );
    assert_eq!(
        &encode_event(&StreamEvent::MessageStop)[..],
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
    );
}

#[test]
fn encoded_events_decode_back() {
    let sent = vec![
        StreamEvent::Ping,
        StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(StopReason::EndTurn),
                stop_sequence: None,
            },
            usage: DeltaUsage {
                output_tokens: 3,
                ..DeltaUsage::default()
            },
            relais: None,
        },
    ];
    let mut dec = SseDecoder::new();
    for e in &sent {
        dec.push(&encode_event(e));
    }
    let mut got = Vec::new();
    while let Some(ev) = dec.next_event().unwrap() {
        let parsed: StreamEvent = serde_json::from_slice(ev.data()).unwrap();
        assert_eq!(ev.event(), Some(parsed.name()));
        got.push(parsed);
    }
    assert_eq!(got, sent);
}

#[test]
fn long_line_fed_byte_by_byte_is_scanned_once() {
    // Rescanning the pending line on every push would be quadratic: ~2e10 byte
    // comparisons here, which takes far longer than this whole test suite.
    let payload = vec![b'x'; 200_000];
    let mut dec = SseDecoder::new();
    dec.push(b"data: ");
    let start = std::time::Instant::now();
    for b in &payload {
        dec.push(std::slice::from_ref(b));
        assert_eq!(dec.next_event().unwrap(), None);
    }
    dec.push(b"\n\n");
    let ev = dec.next_event().unwrap().unwrap();
    assert_eq!(ev.data(), &payload[..]);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

mod prop {
    use proptest::prelude::*;

    use super::*;

    fn decode_at(input: &[u8], cuts: &[usize]) -> Vec<(Option<String>, Vec<u8>)> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut dec = SseDecoder::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&input.len())) {
            dec.push(&input[last..c]);
            last = c;
            while let Some(ev) = dec.next_event().unwrap() {
                out.push((ev.event().map(str::to_owned), ev.data().to_vec()));
            }
        }
        if let Some(ev) = dec.finish().unwrap() {
            out.push((ev.event().map(str::to_owned), ev.data().to_vec()));
        }
        out
    }

    proptest! {
        #[test]
        fn splitting_never_changes_the_events(
            tokens in proptest::collection::vec(proptest::sample::select(vec![
                &b"data:"[..], b"data: x", b"event: e", b"event:", b":c", b"id: 1", b"x", b" ",
                b"\r", b"\n", b"\r\n", b"\xEF\xBB\xBF",
            ]), 0..40),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let input = tokens.concat();
            let whole = decode_at(&input, &[]);
            prop_assert_eq!(decode_at(&input, &cuts), whole);
        }
    }
}
