// TEMP STUB
use crate::anthropic::StreamEvent;
use crate::openai::ChatChunk;
#[derive(Debug, thiserror::Error)]
#[error("s")]
pub struct StreamError;
pub struct OpenAiToAnthropicStream;
impl OpenAiToAnthropicStream {
    pub fn new(_a: String, _b: String, _c: Vec<String>, _d: u64) -> Self {
        OpenAiToAnthropicStream
    }
    pub fn on_chunk(&mut self, _c: ChatChunk, _o: &mut Vec<StreamEvent>) {}
    pub fn on_done(&mut self, _o: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        Ok(())
    }
    pub fn on_eof(&mut self, _o: &mut Vec<StreamEvent>) -> Result<(), StreamError> {
        Ok(())
    }
}
