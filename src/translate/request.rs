// TEMP STUB
use crate::anthropic::MessagesRequest;
use crate::openai::ChatRequest;
pub fn anthropic_to_openai_request(
    req: &MessagesRequest,
    upstream_model: &str,
    stream: bool,
) -> ChatRequest {
    let _ = req;
    ChatRequest {
        model: upstream_model.to_owned(),
        stream,
        ..Default::default()
    }
}
