//! The one schema both backends share, as versioned migrations. Types are spelled so that
//! SQLite and Postgres read the same text (SQLite maps them to its affinities); a statement
//! meant for one backend only says so ([`Sql`]).

/// One statement of a migration.
#[derive(Debug, Clone, Copy)]
pub enum Sql {
    Both(&'static str),
    /// Run by SQLite only (Postgres records the version all the same).
    Sqlite(&'static str),
}

impl Sql {
    pub fn for_sqlite(self) -> Option<&'static str> {
        match self {
            Sql::Both(s) | Sql::Sqlite(s) => Some(s),
        }
    }
    pub fn for_postgres(self) -> Option<&'static str> {
        match self {
            Sql::Both(s) => Some(s),
            Sql::Sqlite(_) => None,
        }
    }
}

/// `(version, statements)`, applied in order, each version once, in one transaction.
pub const MIGRATIONS: &[(i64, &[Sql])] = &[(1, V1), (2, V2)];

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

/// SQLite's ledger rebuilt as one b-tree ordered by time: the row is stored in its
/// primary key's index (WITHOUT ROWID), so an insert touches one b-tree at its right edge
/// instead of four (the rowid table, the request id, the time and key+time indexes), and
/// a query over a period reads a contiguous range. A query by key scans the period asked
/// for (`relais usage --key K --since D`). Inserting cost the writer about half as much
/// (bench/cg.py, README "Operations overhead"), on the core that serves requests, since an
/// embedded SQLite runs inside Relais. Postgres keeps its v1 tables: its server does that
/// work, normally elsewhere.
const V2: &[Sql] = &[
    Sql::Sqlite(
        "CREATE TABLE requests_v2 (
            request_id TEXT NOT NULL,
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
            last_resort BOOLEAN NOT NULL,
            PRIMARY KEY (time_ms, request_id)
        ) WITHOUT ROWID",
    ),
    Sql::Sqlite(
        "INSERT INTO requests_v2 (request_id, time_ms, api, key_name, model_requested, \
         model_served, provider, endpoint, stream, attempts, input_tokens, output_tokens, \
         cache_read_tokens, cache_creation_tokens, cost_eur, ttft_ms, duration_ms, \
         upstream_ms, status, http_status, error_kind, fallback, model_fallback, last_resort) \
         SELECT request_id, time_ms, api, key_name, model_requested, model_served, provider, \
         endpoint, stream, attempts, input_tokens, output_tokens, cache_read_tokens, \
         cache_creation_tokens, cost_eur, ttft_ms, duration_ms, upstream_ms, status, \
         http_status, error_kind, fallback, model_fallback, last_resort FROM requests",
    ),
    Sql::Sqlite("DROP TABLE requests"),
    Sql::Sqlite("ALTER TABLE requests_v2 RENAME TO requests"),
];

pub const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS relais_schema (
    version BIGINT PRIMARY KEY,
    applied_ms BIGINT NOT NULL
)";

/// The request columns in insert order (24).
pub const REQUEST_COLUMNS: &str = "request_id, time_ms, api, key_name, model_requested, \
    model_served, provider, endpoint, stream, attempts, input_tokens, output_tokens, \
    cache_read_tokens, cache_creation_tokens, cost_eur, ttft_ms, duration_ms, upstream_ms, \
    status, http_status, error_kind, fallback, model_fallback, last_resort";
pub const REQUEST_COLUMN_COUNT: usize = 24;

pub const KEY_COLUMNS: &str = "name, digest, policy, created_ms, updated_ms, revoked_ms";
