//! Tool definitions in the Anthropic Messages API, shared by the translation tests.

use serde_json::{json, Value};

pub fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}
    })
}

pub fn time_tool() -> Value {
    json!({
        "name": "get_time",
        "description": "Current time in a time zone",
        "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}
    })
}
