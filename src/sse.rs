// TEMP STUB
use crate::anthropic::StreamEvent;
use bytes::Bytes;
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}
#[derive(Debug, thiserror::Error)]
#[error("sse")]
pub struct SseError;
#[derive(Default)]
pub struct SseDecoder;
impl SseDecoder {
    pub fn new() -> Self {
        SseDecoder
    }
    pub fn push(&mut self, _b: &[u8]) {}
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        Ok(None)
    }
}
pub fn encode_event(ev: &StreamEvent) -> Bytes {
    Bytes::from(format!(
        "event: {}\ndata: {}\n\n",
        ev.name(),
        serde_json::to_string(ev).unwrap_or_default()
    ))
}
