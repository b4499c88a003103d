// TEMP STUB
use crate::anthropic::MessagesResponse;
use crate::openai::ChatResponse;
#[derive(Debug, thiserror::Error)]
#[error("t")]
pub struct TranslateError;
pub fn openai_to_anthropic_response(
    _r: ChatResponse,
    _id: String,
    _model: &str,
    _s: &[String],
) -> Result<MessagesResponse, TranslateError> {
    Err(TranslateError)
}
