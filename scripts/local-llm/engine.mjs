// The model side of the local server: node-llama-cpp's prebuilt llama.cpp (no compiler),
// one context with one sequence, one generation at a time. server.mjs turns OpenAI requests
// into `Job`s for `Engine.run` and its events back into OpenAI JSON/SSE.
import {getLlama, LlamaChat} from "node-llama-cpp";

export class RequestError extends Error {
    /** An error that is the client's fault: answered with `status` in OpenAI's envelope. */
    constructor(message, {status = 400, code = null, param = null} = {}) {
        super(message);
        this.status = status;
        this.code = code;
        this.param = param;
    }
}

export class Engine {
    static async load({modelPath, contextSize, threads}) {
        // build: "never": use the prebuilt binaries shipped on the npm registry; never fall
        // back to compiling llama.cpp (the whole point of this server).
        const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
        const model = await llama.loadModel({modelPath});
        const context = await model.createContext({contextSize, threads, sequences: 1});
        const engine = new Engine(llama, model, context);
        // The first evaluation is much slower than the next ones (about 1 s here): paid before
        // listening, so that run-local.sh pays it while Relais compiles, not on the first answer.
        await engine.chat.generateResponse([{type: "user", text: "Hi"}, {type: "model", response: []}],
            {maxTokens: 1, temperature: 0});
        return engine;
    }

    constructor(llama, model, context) {
        this.llama = llama;
        this.model = model;
        this.context = context;
        this.sequence = context.getSequence();
        this.chat = new LlamaChat({contextSequence: this.sequence});
        this.contextSize = context.contextSize;
        // One generation at a time: the promise of the last queued job.
        this.queue = Promise.resolve();
    }

    /** Counts the tokens of a chat history as the chat wrapper renders it. */
    promptTokens(history, functions) {
        const {contextText} = this.chat.chatWrapper.generateContextState({
            chatHistory: history, availableFunctions: functions, documentFunctionParams: true,
        });
        return contextText.tokenize(this.model.tokenizer).length;
    }

    /** Throws a RequestError when a JSON schema cannot be turned into a grammar. */
    async checkSchema(schema, param) {
        try {
            await this.llama.createGrammarForJsonSchema(schema);
        } catch (e) {
            throw new RequestError(`unsupported JSON schema: ${e.message}`, {param});
        }
    }

    /**
     * Queues a job and runs it when the previous ones are done. `job.signal` aborts it (a
     * client that went away): still queued, it never starts; running, it stops early.
     * Events go to `job.onText(text)` and `job.onToolArgs(index, name, chunk)`.
     */
    run(job) {
        const result = this.queue.then(() => this.#generate(job));
        this.queue = result.catch(() => undefined);
        return result;
    }

    async #generate(job) {
        if (job.signal?.aborted) {
            return {aborted: true};
        }
        const promptTokens = this.promptTokens(job.history, job.functions);
        // The rendered prompt must leave room for at least one token: else the library would
        // silently drop old turns to make it fit (its context shift), which no client asked for.
        const room = this.contextSize - promptTokens - 1;
        if (room < 1) {
            throw new RequestError(
                `This model's maximum context length is ${this.contextSize} tokens. However, your ` +
                `messages resulted in ${promptTokens} tokens.`,
                {code: "context_length_exceeded", param: "messages"});
        }
        const maxTokens = Math.min(job.maxTokens ?? room, room);
        // Every request starts from an empty sequence: no prefix reuse, so an answer does
        // not depend on what was asked before (temperature 0 is reproducible).
        await this.sequence.clearHistory();
        const before = this.sequence.tokenMeter.getState();
        const options = {
            maxTokens,
            temperature: job.temperature,
            topP: job.topP,
            seed: job.seed,
            customStopTriggers: job.stop.length > 0 ? job.stop : undefined,
            signal: job.signal,
            stopOnAbortSignal: true,
            onTextChunk: job.onText,
            // The size of a shift if one were ever needed; the check above prevents it.
            contextShift: {size: 1},
        };
        if (job.grammar) {
            options.grammar = job.grammar;
        } else if (job.functions) {
            options.functions = job.functions;
            options.documentFunctionParams = true;
            options.maxParallelFunctionCalls = 1;
            options.onFunctionCallParamsChunk = (c) => job.onToolArgs?.(c.callIndex, c.functionName, c.paramsChunk);
        }
        const res = await this.chat.generateResponse(job.history, options);
        const after = this.sequence.tokenMeter.getState();
        return {
            aborted: res.metadata.stopReason === "abort",
            text: res.response,
            functionCalls: res.functionCalls ?? [],
            stopReason: res.metadata.stopReason,
            stopTrigger: res.metadata.stopReason === "customStopTrigger"
                ? res.metadata.customStopTrigger.filter((t) => typeof t === "string").join("")
                : null,
            // What the model evaluated and sampled (the rendered prompt's count above may
            // include a BOS marker the tokenizer drops).
            promptTokens: after.usedInputTokens - before.usedInputTokens,
            completionTokens: after.usedOutputTokens - before.usedOutputTokens,
        };
    }
}
