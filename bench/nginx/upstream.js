// The bench's fake OpenAI-compatible upstream in nginx + njs: the same answers as
// `bench-upstream` (bench/tools/src/bin/upstream.rs), byte for byte, from the web server
// every proxy is compared with. bench/nginx_upstream.py prepends the constants
// (CHUNKS, PACE_MS, HOLD_MS, HOLD_CHUNKS) and writes the nginx config.
//
// The bodies are built once, when nginx loads the module: njs runs each request in a clone
// of the module's state, so a request only picks a prebuilt string.

function chunk(delta, finish) {
    return 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        + '"model":"bench-upstream","choices":[{"index":0,"delta":' + delta
        + ',"finish_reason":' + finish + '}]}\n\n';
}

function token(i, n) {
    return i == n ? 'bench-end' : 'w' + i + ' ';
}

// Frames: [role], content 1..=n, [finish + usage + DONE].
function frames(n) {
    var v = [chunk('{"role":"assistant","content":""}', 'null')];
    for (var i = 1; i <= n; i++) {
        v.push(chunk('{"content":"' + token(i, n) + '"}', 'null'));
    }
    v.push(chunk('{}', '"stop"')
        + 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        + '"model":"bench-upstream","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":'
        + n + ',"total_tokens":' + (n + 9) + '}}\n\n'
        + 'data: [DONE]\n\n');
    return v;
}

function jsonBody(n) {
    var text = '';
    for (var i = 1; i <= n; i++) {
        text += token(i, n);
    }
    return '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
        + '"model":"bench-upstream","choices":[{"index":0,"message":{"role":"assistant",'
        + '"content":"' + text + '"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,'
        + '"completion_tokens":' + n + ',"total_tokens":' + (n + 9) + '}}';
}

var JSON_BODY = jsonBody(CHUNKS);
var STREAM = frames(CHUNKS);
var STREAM_WHOLE = STREAM.join('');
var HOLD = frames(HOLD_CHUNKS);

// Streams frame k (k >= 1) at start + first + (k - 1) * pace, frame 0 at once.
function paced(r, v, first, pace) {
    r.status = 200;
    r.headersOut['Content-Type'] = 'text/event-stream';
    r.sendHeader();
    r.send(v[0]);
    var start = Date.now();
    var k = 1;
    function next() {
        r.send(v[k]);
        k++;
        if (k == v.length) {
            r.finish();
            return;
        }
        setTimeout(next, Math.max(0, start + first + (k - 1) * pace - Date.now()));
    }
    setTimeout(next, first);
}

function chat(r) {
    var b = r.requestText || '';
    if (!/"stream"\s*:\s*true/.test(b)) {
        r.headersOut['Content-Type'] = 'application/json';
        r.return(200, JSON_BODY);
    } else if (b.indexOf('up-paced') >= 0) {
        paced(r, STREAM, PACE_MS, PACE_MS);
    } else if (b.indexOf('up-hold') >= 0) {
        paced(r, HOLD, 0, HOLD_MS);
    } else {
        r.headersOut['Content-Type'] = 'text/event-stream';
        r.return(200, STREAM_WHOLE);
    }
}

export default { chat };
