#!/usr/bin/env node
// A small OpenAI-compatible chat-completions server over node-llama-cpp's prebuilt llama.cpp:
// Relais's local real-model upstream (scripts/run-local.sh, the Python suite), installed from
// the npm registry with no compiler. Loopback only; one generation at a time (queued).
//
//   node scripts/local-llm/server.mjs --model SmolLM2.gguf [--port 8000] [--ctx 2048] [--threads 1]
//
// Prints "listening on http://127.0.0.1:PORT" once the model is loaded (--port 0: any port).
import http from "node:http";
import {randomUUID} from "node:crypto";
import {parseArgs} from "node:util";
import {Engine, RequestError} from "./engine.mjs";
import {chatRequestToJob} from "./request.mjs";

const MAX_BODY_BYTES = 8 * 1024 * 1024;

const {values: args} = parseArgs({
    options: {
        model: {type: "string"},
        port: {type: "string", default: process.env.RELAIS_LLM_PORT ?? "8000"},
        ctx: {type: "string", default: "2048"},
        // One thread: with two, generation stalls for seconds whenever the other core is busy
        // (a build beside it), measured on 2-core machines.
        threads: {type: "string", default: process.env.RELAIS_LLM_THREADS ?? "1"},
    },
});
if (!args.model) {
    console.error("usage: server.mjs --model PATH.gguf [--port N] [--ctx N] [--threads N]");
    process.exit(2);
}

const engine = await Engine.load({
    modelPath: args.model, contextSize: Number(args.ctx), threads: Number(args.threads),
});

function sendJson(res, status, value) {
    const body = JSON.stringify(value);
    res.writeHead(status, {"content-type": "application/json", "content-length": Buffer.byteLength(body)});
    res.end(body);
}

function errorBody(err) {
    const client = err instanceof RequestError;
    return {
        error: {
            message: client ? err.message : `internal error: ${err?.message ?? err}`,
            type: client ? "invalid_request_error" : "server_error",
            param: client ? err.param : null,
            code: client ? err.code : null,
        },
    };
}

function sendError(res, err) {
    if (!(err instanceof RequestError)) console.error(err);
    sendJson(res, err instanceof RequestError ? err.status : 500, errorBody(err));
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on("data", (c) => {
            size += c.length;
            if (size > MAX_BODY_BYTES) {
                reject(new RequestError("request body too large", {status: 413}));
                req.destroy();
                return;
            }
            chunks.push(c);
        });
        req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        req.on("error", reject);
    });
}

function toolCallId() {
    return `call_${randomUUID().replaceAll("-", "").slice(0, 24)}`;
}

function finishReason(result, toolCalls) {
    if (result.stopReason === "maxTokens") return "length";
    if (toolCalls.length > 0) return "tool_calls";
    return "stop";
}

/** A forced call's generated JSON -> [{name, arguments}] (arguments as a JSON string). */
function forcedCalls(job, text) {
    if (!job.forcedTools) return [];
    if (job.forcedTools.length === 1) return [{name: job.forcedTools[0], arguments: text.trim()}];
    try {
        const {name, arguments: a} = JSON.parse(text);
        return [{name, arguments: JSON.stringify(a)}];
    } catch {
        // Cut short by max_tokens: the JSON is incomplete, as OpenAI's would be.
        return [{name: job.forcedTools[0], arguments: text}];
    }
}

function usage(result) {
    return {
        prompt_tokens: result.promptTokens,
        completion_tokens: result.completionTokens,
        total_tokens: result.promptTokens + result.completionTokens,
    };
}

/** Aborts the job when the client goes away before the answer is complete. */
function abortOnClose(req, res) {
    const ac = new AbortController();
    res.on("close", () => {
        if (!res.writableFinished) ac.abort(new Error("client closed the connection"));
    });
    return ac.signal;
}

async function completeWhole(req, res, job, id, created) {
    job.signal = abortOnClose(req, res);
    const result = await engine.run(job);
    if (result.aborted) return;
    const calls = job.forcedTools
        ? forcedCalls(job, result.text)
        : result.functionCalls.map((c) => ({name: c.functionName, arguments: JSON.stringify(c.params ?? {})}));
    const toolCalls = calls.map((c) => ({id: toolCallId(), type: "function", function: c}));
    const content = job.forcedTools ? null : result.text;
    sendJson(res, 200, {
        id, object: "chat.completion", created, model: job.model,
        choices: [{
            index: 0,
            message: {
                role: "assistant",
                content: toolCalls.length > 0 && !content ? null : content,
                ...(toolCalls.length > 0 ? {tool_calls: toolCalls} : {}),
                refusal: null,
            },
            logprobs: null,
            finish_reason: finishReason(result, toolCalls),
            // vLLM's field: the stop string that ended the answer (null otherwise).
            stop_reason: result.stopTrigger,
        }],
        usage: usage(result),
    });
}

async function completeStream(req, res, job, id, created) {
    job.signal = abortOnClose(req, res);
    let started = false;
    const send = (value) => res.write(`data: ${JSON.stringify(value)}\n\n`);
    const chunk = (delta, finish = null, extra = {}) => send({
        id, object: "chat.completion.chunk", created, model: job.model,
        choices: [{index: 0, delta, logprobs: null, finish_reason: finish, ...extra}],
    });
    // Headers go with the first event, after the queue: a request that fails validation in
    // the engine (context overflow) still gets a plain HTTP 400.
    const start = () => {
        if (started) return;
        started = true;
        res.writeHead(200, {"content-type": "text/event-stream", "cache-control": "no-cache"});
        chunk({role: "assistant", content: ""});
    };
    const streamedCalls = new Map();
    const forcedSingle = job.forcedTools?.length === 1;
    job.onText = (text) => {
        if (!text) return;
        start();
        if (forcedSingle) {
            chunk({tool_calls: [{index: 0, function: {arguments: text}}]});
        } else if (!job.forcedTools) {
            chunk({content: text});
        }
    };
    job.onToolArgs = (index, name, argsChunk) => {
        start();
        if (!streamedCalls.has(index)) {
            streamedCalls.set(index, name);
            chunk({tool_calls: [{index, id: toolCallId(), type: "function", function: {name, arguments: ""}}]});
        }
        if (argsChunk) chunk({tool_calls: [{index, function: {arguments: argsChunk}}]});
    };
    if (forcedSingle) {
        // The call's header first, then its arguments as they are generated.
        const header = () => {
            start();
            chunk({tool_calls: [{index: 0, id: toolCallId(), type: "function",
                function: {name: job.forcedTools[0], arguments: ""}}]});
        };
        const onText = job.onText;
        let sentHeader = false;
        job.onText = (text) => {
            if (!sentHeader) {
                sentHeader = true;
                header();
            }
            onText(text);
        };
    }
    let result;
    try {
        result = await engine.run(job);
    } catch (err) {
        if (!started) throw err;
        if (!(err instanceof RequestError)) console.error(err);
        send(errorBody(err));
        res.end();
        return;
    }
    if (result.aborted) {
        res.end();
        return;
    }
    start();
    let calls = streamedCalls.size;
    if (job.forcedTools && !forcedSingle) {
        // Several tools: the name is only known once the JSON is complete.
        for (const c of forcedCalls(job, result.text)) {
            chunk({tool_calls: [{index: 0, id: toolCallId(), type: "function", function: c}]});
        }
        calls = 1;
    } else if (forcedSingle) {
        calls = 1;
    } else {
        // A call whose parameters never came as chunks (none, say) still reaches the client.
        result.functionCalls.forEach((c, index) => {
            if (streamedCalls.has(index)) return;
            chunk({tool_calls: [{index, id: toolCallId(), type: "function",
                function: {name: c.functionName, arguments: JSON.stringify(c.params ?? {})}}]});
            calls += 1;
        });
    }
    chunk({}, finishReason(result, new Array(calls)), {stop_reason: result.stopTrigger});
    if (job.includeUsage) {
        send({id, object: "chat.completion.chunk", created, model: job.model, choices: [], usage: usage(result)});
    }
    res.write("data: [DONE]\n\n");
    res.end();
}

async function chatCompletions(req, res) {
    let body;
    try {
        body = JSON.parse(await readBody(req));
    } catch (err) {
        if (err instanceof RequestError) throw err;
        throw new RequestError(`invalid JSON body: ${err.message}`);
    }
    const job = await chatRequestToJob(body, engine);
    const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    if (job.stream) {
        await completeStream(req, res, job, id, created);
    } else {
        await completeWhole(req, res, job, id, created);
    }
}

const server = http.createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    try {
        if (req.method === "GET" && path === "/v1/models") {
            sendJson(res, 200, {object: "list", data: [{
                id: "smollm2-135m", object: "model", created: 0, owned_by: "local",
                context_window: engine.contextSize,
            }]});
        } else if (req.method === "GET" && path === "/health") {
            sendJson(res, 200, {status: "ok"});
        } else if (req.method === "POST" && path === "/v1/chat/completions") {
            await chatCompletions(req, res);
        } else {
            sendError(res, new RequestError(`no route ${req.method} ${path}`, {status: 404}));
        }
    } catch (err) {
        if (res.headersSent) {
            console.error(err);
            res.destroy();
        } else {
            sendError(res, err);
        }
    }
});
// Queued requests may wait for several generations before their first byte.
server.requestTimeout = 0;
// Idle keep-alive connections stay open longer than clients' pools keep them (reqwest: 90 s),
// so that a client never sends a request on a connection the server is closing.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 130_000;
server.listen(Number(args.port), "127.0.0.1", () => {
    console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
        server.close();
        process.exit(0);
    });
}
