// OpenAI chat-completions request -> a job for engine.mjs: validation (a 400 for what this
// server cannot honour, rather than silently ignoring it), messages -> node-llama-cpp's chat
// history, tools -> its function calling or a JSON-schema grammar.
import {RequestError} from "./engine.mjs";

const MAX_STOP = 4;

/** Turns a parsed request body into a job (without the callbacks, set by the server). */
export async function chatRequestToJob(body, engine) {
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
        throw new RequestError("the request body must be a JSON object");
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
        throw new RequestError("`messages` must be a non-empty array", {param: "messages"});
    }
    if (body.n !== undefined && body.n !== null && body.n !== 1) {
        throw new RequestError("only `n: 1` is supported", {param: "n"});
    }
    const maxTokens = optionalInt(body, "max_completion_tokens") ?? optionalInt(body, "max_tokens");
    if (maxTokens !== undefined && maxTokens < 1) {
        throw new RequestError("the output token limit must be at least 1", {param: "max_tokens"});
    }
    const temperature = optionalNumber(body, "temperature", 0, 2);
    const topP = optionalNumber(body, "top_p", 0, 1);
    const seed = optionalInt(body, "seed");
    const stream = optionalBool(body, "stream") ?? false;
    const streamOptions = body.stream_options ?? {};
    if (typeof streamOptions !== "object" || Array.isArray(streamOptions)) {
        throw new RequestError("`stream_options` must be an object", {param: "stream_options"});
    }
    const continueFinal = optionalBool(body, "continue_final_message") ?? false;
    const addGenerationPrompt = optionalBool(body, "add_generation_prompt");
    if (continueFinal && addGenerationPrompt === true) {
        throw new RequestError("`continue_final_message` and `add_generation_prompt` cannot both be true",
            {param: "continue_final_message"});
    }
    const last = body.messages.at(-1);
    if (continueFinal && last?.role !== "assistant") {
        throw new RequestError("`continue_final_message` needs an assistant message last",
            {param: "continue_final_message"});
    }

    const history = messagesToHistory(body.messages);
    // A new assistant turn follows, unless the model continues its own turn: the final
    // assistant message (continue_final_message: rendered without its end-of-turn token), or
    // the turn whose tool calls the last messages answered.
    if (!continueFinal && last?.role !== "tool") {
        history.push({type: "model", response: []});
    }

    const job = {
        history, maxTokens, temperature: temperature ?? DEFAULT_TEMPERATURE, topP, seed,
        stop: stopList(body.stop), stream, includeUsage: streamOptions.include_usage === true,
        model: typeof body.model === "string" && body.model ? body.model : "smollm2-135m",
        functions: undefined, grammar: undefined, forcedTools: undefined,
    };
    await addTools(job, body, engine);
    await addResponseFormat(job, body, engine);
    return job;
}

// OpenAI's default is 1; this is llama.cpp's server default, kinder to a 135M model.
const DEFAULT_TEMPERATURE = 0.8;

function optionalInt(body, key) {
    const v = body[key];
    if (v === undefined || v === null) return undefined;
    if (!Number.isInteger(v)) throw new RequestError(`\`${key}\` must be an integer`, {param: key});
    return v;
}

function optionalNumber(body, key, min, max) {
    const v = body[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !(v >= min && v <= max)) {
        throw new RequestError(`\`${key}\` must be a number from ${min} to ${max}`, {param: key});
    }
    return v;
}

function optionalBool(body, key) {
    const v = body[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "boolean") throw new RequestError(`\`${key}\` must be a boolean`, {param: key});
    return v;
}

function stopList(stop) {
    if (stop === undefined || stop === null) return [];
    const list = typeof stop === "string" ? [stop] : stop;
    if (!Array.isArray(list) || list.length > MAX_STOP || !list.every((s) => typeof s === "string" && s)) {
        throw new RequestError(`\`stop\` must be a string or up to ${MAX_STOP} non-empty strings`, {param: "stop"});
    }
    return list;
}

/** Message content (a string or an array of text parts) as one string. */
function contentText(content, index) {
    if (content === undefined || content === null) return "";
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) {
        throw new RequestError("message content must be a string or an array of parts",
            {param: `messages[${index}].content`});
    }
    return content.map((part) => {
        if (part?.type === "text" && typeof part.text === "string") return part.text;
        throw new RequestError(`content parts of type ${JSON.stringify(part?.type)} are not supported ` +
            "by this text-only model", {param: `messages[${index}].content`});
    }).join("\n");
}

function parseArguments(text) {
    try {
        return JSON.parse(text);
    } catch {
        return text;
    }
}

/** OpenAI messages -> node-llama-cpp chat history. Tool results join their call. */
export function messagesToHistory(messages) {
    const history = [];
    const callsById = new Map();
    messages.forEach((m, i) => {
        if (m === null || typeof m !== "object") {
            throw new RequestError("each message must be an object", {param: `messages[${i}]`});
        }
        const text = contentText(m.content, i);
        switch (m.role) {
        case "system":
        case "developer":
            history.push({type: "system", text});
            break;
        case "user":
            history.push({type: "user", text});
            break;
        case "assistant": {
            const response = text ? [text] : [];
            for (const call of m.tool_calls ?? []) {
                if (call?.type !== "function" || typeof call.function?.name !== "string") {
                    throw new RequestError("tool calls must be of type function, with a name",
                        {param: `messages[${i}].tool_calls`});
                }
                const item = {
                    type: "functionCall", name: call.function.name,
                    params: parseArguments(call.function.arguments ?? "{}"), result: "",
                };
                callsById.set(call.id, item);
                response.push(item);
            }
            history.push({type: "model", response});
            break;
        }
        case "tool": {
            const call = callsById.get(m.tool_call_id);
            if (call) {
                call.result = text;
            } else {
                // A result whose call is not in the conversation: still shown to the model.
                history.push({type: "user", text: `Tool result (${m.tool_call_id}): ${text}`});
            }
            break;
        }
        default:
            throw new RequestError(`unknown message role ${JSON.stringify(m.role)}`, {param: `messages[${i}].role`});
        }
    });
    return history;
}

/**
 * Keeps the parts of a JSON schema that node-llama-cpp turns into a grammar; `anyOf` is read
 * as `oneOf` and unknown keywords (`$schema`, `title`, `default`, ...) are dropped.
 */
export function toGrammarSchema(schema) {
    if (schema === true || schema === undefined || schema === null) return {type: "object", additionalProperties: true};
    if (typeof schema !== "object" || Array.isArray(schema)) return schema;
    const out = {};
    for (const key of ["type", "description", "const", "enum", "required", "minLength", "maxLength",
        "minItems", "maxItems", "minProperties", "maxProperties", "$ref"]) {
        if (schema[key] !== undefined) out[key] = schema[key];
    }
    if (["date-time", "time", "date"].includes(schema.format)) out.format = schema.format;
    if (schema.properties) {
        out.properties = Object.fromEntries(Object.entries(schema.properties).map(([k, v]) => [k, toGrammarSchema(v)]));
    }
    if (schema.additionalProperties !== undefined) {
        out.additionalProperties = typeof schema.additionalProperties === "boolean"
            ? schema.additionalProperties : toGrammarSchema(schema.additionalProperties);
    }
    if (schema.items !== undefined) out.items = toGrammarSchema(schema.items);
    if (schema.prefixItems) out.prefixItems = schema.prefixItems.map(toGrammarSchema);
    const oneOf = schema.oneOf ?? schema.anyOf;
    if (oneOf) out.oneOf = oneOf.map(toGrammarSchema);
    const defs = schema.$defs ?? schema.definitions;
    if (defs) out.$defs = Object.fromEntries(Object.entries(defs).map(([k, v]) => [k, toGrammarSchema(v)]));
    if (typeof out.$ref === "string") out.$ref = out.$ref.replace("#/definitions/", "#/$defs/");
    if (out.type === "object" && !out.properties && out.additionalProperties === undefined) {
        out.additionalProperties = true;
    }
    return out;
}

async function addTools(job, body, engine) {
    const tools = body.tools ?? [];
    if (!Array.isArray(tools)) throw new RequestError("`tools` must be an array", {param: "tools"});
    const byName = new Map();
    for (const [i, t] of tools.entries()) {
        const f = t?.function;
        if (t?.type !== "function" || typeof f?.name !== "string" || !f.name) {
            throw new RequestError("each tool must be {type: \"function\", function: {name, ...}}", {param: `tools[${i}]`});
        }
        const params = toGrammarSchema(f.parameters ?? {type: "object", properties: {}});
        await engine.checkSchema(params, `tools[${i}].function.parameters`);
        byName.set(f.name, {name: f.name, description: f.description ?? "", params});
    }
    const choice = body.tool_choice ?? "auto";
    if (byName.size === 0) {
        if (typeof choice === "object" || choice === "required") {
            throw new RequestError("`tool_choice` needs `tools`", {param: "tool_choice"});
        }
        return;
    }
    if (choice === "none") return;
    if (choice === "auto") {
        job.functions = Object.fromEntries([...byName.values()].map((t) =>
            [t.name, {description: t.description || undefined, params: t.params}]));
        return;
    }
    let forced;
    if (choice === "required") {
        forced = [...byName.values()];
    } else if (choice?.type === "function" && typeof choice.function?.name === "string") {
        const tool = byName.get(choice.function.name);
        if (!tool) {
            throw new RequestError(`tool_choice names ${JSON.stringify(choice.function.name)}, which is not in \`tools\``,
                {param: "tool_choice"});
        }
        forced = [tool];
    } else {
        throw new RequestError("`tool_choice` must be \"none\", \"auto\", \"required\" or a named function",
            {param: "tool_choice"});
    }
    await forceToolCall(job, forced, engine);
}

/**
 * A forced call (a named `tool_choice`, or `required`) is not left to the model's own call
 * syntax, which a 135M model rarely produces: the tools are described in a system message
 * and the answer is constrained by a grammar to the arguments of the one tool, or to
 * `{"name", "arguments"}` over several.
 */
async function forceToolCall(job, tools, engine) {
    const described = tools.map((t) => `- ${t.name}: ${t.description || "(no description)"}; ` +
        `arguments: ${JSON.stringify(t.params)}`).join("\n");
    const single = tools.length === 1;
    const instruction = single
        ? `Call the function ${tools[0].name}. Reply with its arguments only, as one JSON object.\n${described}`
        : `Call one of these functions. Reply with one JSON object: {"name": ..., "arguments": {...}}.\n${described}`;
    const schema = single ? tools[0].params : {
        oneOf: tools.map((t) => ({
            type: "object", properties: {name: {const: t.name}, arguments: t.params},
            required: ["name", "arguments"],
        })),
    };
    job.grammar = await engine.llama.createGrammarForJsonSchema(schema);
    job.forcedTools = tools.map((t) => t.name);
    // Just before the turn being generated, so that the instruction is the freshest context.
    job.history.splice(job.history.length - 1, 0, {type: "system", text: instruction});
}

async function addResponseFormat(job, body, engine) {
    const format = body.response_format;
    if (format === undefined || format === null || format.type === "text") return;
    if (job.grammar || job.functions) {
        throw new RequestError("`response_format` cannot be combined with tool calls here", {param: "response_format"});
    }
    if (format.type === "json_object") {
        job.grammar = await engine.llama.getGrammarFor("json");
    } else if (format.type === "json_schema" && format.json_schema?.schema) {
        const schema = toGrammarSchema(format.json_schema.schema);
        await engine.checkSchema(schema, "response_format");
        job.grammar = await engine.llama.createGrammarForJsonSchema(schema);
    } else {
        throw new RequestError("`response_format` must be text, json_object or json_schema with a schema",
            {param: "response_format"});
    }
}
