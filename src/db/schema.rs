//! The one schema both backends share, as versioned migrations. Types are spelled so that
//! SQLite and Postgres read the same text (SQLite maps them to its affinities); a statement
//! meant for one backend only says so ([`Sql`]).

/// One statement of a migration.
#[derive(Debug, Clone, Copy)]
pub enum Sql {
    Both(&'static str),
    /// Run by SQLite only (Postgres records the version all the same).
    Sqlite(&'static str),
    /// Run by Postgres only.
    Postgres(&'static str),
}

impl Sql {
    pub fn for_sqlite(self) -> Option<&'static str> {
        match self {
            Sql::Both(s) | Sql::Sqlite(s) => Some(s),
            Sql::Postgres(_) => None,
        }
    }
    pub fn for_postgres(self) -> Option<&'static str> {
        match self {
            Sql::Both(s) | Sql::Postgres(s) => Some(s),
            Sql::Sqlite(_) => None,
        }
    }
}

/// `(version, statements)`, applied in order, each version once, in one transaction.
pub const MIGRATIONS: &[(i64, &[Sql])] = &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5)];

const V1: &[Sql] = &[
    // One row per request. Never prompts, completions or keys: only the key's name.
    Sql::Both(
        "CREATE TABLE requests (
            request_id TEXT PRIMARY KEY,
            time_ms BIGINT NOT NULL,
            api TEXT NOT NULL,
            key_name TEXT,
            model_requested TEXT NOT NULL,
            model_served TEXT,
            provider TEXT,
            endpoint TEXT,
            stream BOOLEAN NOT NULL,
            attempts INTEGER NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            cache_creation_tokens BIGINT NOT NULL,
            cost_eur DOUBLE PRECISION NOT NULL,
            ttft_ms DOUBLE PRECISION,
            duration_ms DOUBLE PRECISION NOT NULL,
            upstream_ms DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL,
            http_status INTEGER NOT NULL,
            error_kind TEXT,
            fallback BOOLEAN NOT NULL,
            model_fallback BOOLEAN NOT NULL,
            last_resort BOOLEAN NOT NULL
        )",
    ),
    Sql::Both("CREATE INDEX requests_time ON requests (time_ms)"),
    Sql::Both("CREATE INDEX requests_key_time ON requests (key_name, time_ms)"),
    // Keys managed at run time: only the SHA-256 digest (hex) of the key is stored.
    Sql::Both(
        "CREATE TABLE keys (
            name TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            policy TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            revoked_ms BIGINT
        )",
    ),
];

/// SQLite's ledger rebuilt for a cheap insert, since an embedded SQLite is written by
/// Relais's own process, on the cores that serve requests (Postgres keeps the v1 tables:
/// its server does that work, normally on another machine):
/// - one b-tree ordered by `(time_ms, request_id)` (`WITHOUT ROWID`, no other index), so an
///   insert touches one b-tree at its right edge instead of four (the rowid table, the
///   request-id key, the time and key+time indexes), and a period is one contiguous range;
///   a query for one key scans the period asked for;
/// - the eight small columns packed into one stored integer, `flags` (layout in
///   [`sqlite_flags`]), in a table `request_rows`; the view `requests` shows every v1
///   column under its v1 name and value, so queries read as before, and an insert binds 17
///   values instead of 24. (Not VIRTUAL generated columns: SQLite computes those on every
///   insert too, which cost more than the binds saved.)
///
/// Together these cut the writer's instructions per row by about half (bench/cg.py; README
/// "Operations overhead").
const V2: &[Sql] = &[
    Sql::Sqlite(
        "CREATE TABLE request_rows (
            request_id TEXT NOT NULL,
            time_ms BIGINT NOT NULL,
            key_name TEXT,
            model_requested TEXT NOT NULL,
            model_served TEXT,
            provider TEXT,
            endpoint TEXT,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cache_read_tokens BIGINT NOT NULL,
            cache_creation_tokens BIGINT NOT NULL,
            cost_eur DOUBLE PRECISION NOT NULL,
            ttft_ms DOUBLE PRECISION,
            duration_ms DOUBLE PRECISION NOT NULL,
            upstream_ms DOUBLE PRECISION NOT NULL,
            error_kind TEXT,
            flags INTEGER NOT NULL,
            PRIMARY KEY (time_ms, request_id)
        ) WITHOUT ROWID",
    ),
    Sql::Sqlite(
        "INSERT INTO request_rows (request_id, time_ms, key_name, model_requested, \
         model_served, provider, endpoint, input_tokens, output_tokens, cache_read_tokens, \
         cache_creation_tokens, cost_eur, ttft_ms, duration_ms, upstream_ms, error_kind, flags) \
         SELECT request_id, time_ms, key_name, model_requested, model_served, provider, \
         endpoint, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, \
         cost_eur, ttft_ms, duration_ms, upstream_ms, error_kind, \
         (api = 'chat_completions') | ((stream <> 0) << 1) | ((fallback <> 0) << 2) \
         | ((model_fallback <> 0) << 3) | ((last_resort <> 0) << 4) \
         | (CASE status WHEN 'ok' THEN 0 WHEN 'failed' THEN 1 WHEN 'failed_mid_stream' THEN 2 \
            ELSE 3 END << 5) | ((http_status & 1023) << 8) | (attempts << 18) \
         FROM requests",
    ),
    Sql::Sqlite("DROP TABLE requests"),
    Sql::Sqlite(
        "CREATE VIEW requests AS SELECT request_id, time_ms,
            CASE flags & 1 WHEN 0 THEN 'messages' ELSE 'chat_completions' END AS api,
            key_name, model_requested, model_served, provider, endpoint,
            (flags >> 1) & 1 AS stream,
            flags >> 18 AS attempts,
            input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_eur,
            ttft_ms, duration_ms, upstream_ms,
            CASE (flags >> 5) & 3 WHEN 0 THEN 'ok' WHEN 1 THEN 'failed'
                WHEN 2 THEN 'failed_mid_stream' ELSE 'client_closed' END AS status,
            (flags >> 8) & 1023 AS http_status,
            error_kind,
            (flags >> 2) & 1 AS fallback,
            (flags >> 3) & 1 AS model_fallback,
            (flags >> 4) & 1 AS last_resort
        FROM request_rows",
    ),
];

/// The columns of SQLite's `request_rows` (v2, and v5's receipt), in insert order (19).
pub const SQLITE_STORED_COLUMNS: &str = "request_id, time_ms, key_name, model_requested, \
    model_served, provider, endpoint, input_tokens, output_tokens, cache_read_tokens, \
    cache_creation_tokens, cost_eur, ttft_ms, duration_ms, upstream_ms, error_kind, flags, \
    receipt_id, receipt";
pub const SQLITE_STORED_COUNT: usize = 19;

/// SQLite's `flags` column (v2, v3): bit 0 the chat-completions door, 7 the Responses door
/// (v3), 1 stream, 2 fallback,
/// 3 model fallback, 4 last resort, 5–6 status (ok, failed, failed mid-stream, client
/// closed), 8–17 the HTTP status, 18 and up the attempts.
pub fn sqlite_flags(r: &crate::observe::RequestRecord) -> i64 {
    use crate::observe::{Api, Status};
    let status = match r.status {
        Status::Ok => 0,
        Status::Failed => 1,
        Status::FailedMidStream => 2,
        Status::ClientClosed => 3,
    };
    i64::from(r.api == Api::ChatCompletions)
        | i64::from(r.api == Api::Responses) << 7
        | i64::from(r.stream) << 1
        | i64::from(r.fallback) << 2
        | i64::from(r.model_fallback) << 3
        | i64::from(r.last_resort) << 4
        | status << 5
        | i64::from(r.http_status & 1023) << 8
        | i64::from(r.attempts) << 18
}

/// The door, status and HTTP status a `flags` value holds (as the view `requests` decodes
/// them): `(api, status, http_status)`.
pub fn sqlite_unflags(flags: i64) -> (&'static str, &'static str, i64) {
    let api = if flags & 128 != 0 {
        "responses"
    } else if flags & 1 != 0 {
        "chat_completions"
    } else {
        "messages"
    };
    let status = match (flags >> 5) & 3 {
        0 => "ok",
        1 => "failed",
        2 => "failed_mid_stream",
        _ => "client_closed",
    };
    (api, status, (flags >> 8) & 1023)
}

/// The third door (`POST /v1/responses`): its rows set bit 7 of `flags`, which the view
/// names `responses`. Rows written before have bit 7 clear, so they read as before.
const V3: &[Sql] = &[
    Sql::Sqlite("DROP VIEW requests"),
    Sql::Sqlite(
        "CREATE VIEW requests AS SELECT request_id, time_ms,
            CASE WHEN flags & 128 THEN 'responses' WHEN flags & 1 THEN 'chat_completions'
                ELSE 'messages' END AS api,
            key_name, model_requested, model_served, provider, endpoint,
            (flags >> 1) & 1 AS stream,
            flags >> 18 AS attempts,
            input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cost_eur,
            ttft_ms, duration_ms, upstream_ms,
            CASE (flags >> 5) & 3 WHEN 0 THEN 'ok' WHEN 1 THEN 'failed'
                WHEN 2 THEN 'failed_mid_stream' ELSE 'client_closed' END AS status,
            (flags >> 8) & 1023 AS http_status,
            error_kind,
            (flags >> 2) & 1 AS fallback,
            (flags >> 3) & 1 AS model_fallback,
            (flags >> 4) & 1 AS last_resort
        FROM request_rows",
    ),
];

/// Signed compliance receipts (docs/receipts.md): one row per receipt, its RFC 8785
/// canonical JSON as signed, keyed by its id alone. Ids begin with the issue time in hex,
/// so one b-tree serves a lookup by id, a period (an id range: export, retention) and an
/// insert at its right edge (SQLite: `WITHOUT ROWID`, no other index). `key_name` is the
/// one field read outside the JSON: who may read the receipt.
/// `receipt_keys` holds the signing keys (Ed25519 secrets, base64url), newest signing;
/// older ones stay published so that receipts signed with them still verify.
const V4: &[Sql] = &[
    Sql::Sqlite(
        "CREATE TABLE receipts (
            receipt_id TEXT PRIMARY KEY,
            key_name TEXT,
            receipt TEXT NOT NULL
        ) WITHOUT ROWID",
    ),
    Sql::Postgres(
        "CREATE TABLE receipts (
            receipt_id TEXT PRIMARY KEY,
            key_name TEXT,
            receipt TEXT NOT NULL
        )",
    ),
    Sql::Both(
        "CREATE TABLE receipt_keys (
            kid TEXT PRIMARY KEY,
            secret TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        )",
    ),
];

/// A receipt stored in its request's row rather than in a row of its own: a second row per
/// request (a second b-tree insert, ~1 KB of canonical JSON made in the writer) was most of
/// a receipt's cost (docs/receipts.md, "Switches and cost"). `receipt_id` is the receipt's
/// id, `receipt` its own parts as JSON (`receipt::StoredParts`); the rest of a receipt is
/// the row's columns. Its canonical form is made when it is read. No index: an id begins
/// with the arrival time, which is the row's `time_ms`, so a lookup or an export reads
/// the time index (SQLite: the table's own key). Receipts written by v4 stay in `receipts`,
/// read, exported and pruned as before.
const V5: &[Sql] = &[
    Sql::Sqlite("ALTER TABLE request_rows ADD COLUMN receipt_id TEXT"),
    Sql::Sqlite("ALTER TABLE request_rows ADD COLUMN receipt TEXT"),
    Sql::Postgres("ALTER TABLE requests ADD COLUMN receipt_id TEXT, ADD COLUMN receipt TEXT"),
];

pub const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS relais_schema (
    version BIGINT PRIMARY KEY,
    applied_ms BIGINT NOT NULL
)";

/// The request columns as every backend shows them (24), in Postgres's insert order; the
/// tests check the inserts and SQLite's view against it.
#[cfg(test)]
pub const REQUEST_COLUMNS: &str = "request_id, time_ms, api, key_name, model_requested, \
    model_served, provider, endpoint, stream, attempts, input_tokens, output_tokens, \
    cache_read_tokens, cache_creation_tokens, cost_eur, ttft_ms, duration_ms, upstream_ms, \
    status, http_status, error_kind, fallback, model_fallback, last_resort";
pub const REQUEST_COLUMN_COUNT: usize = 24;

pub const KEY_COLUMNS: &str = "name, digest, policy, created_ms, updated_ms, revoked_ms";
