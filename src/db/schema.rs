//! The one schema both backends share, as versioned migrations. Types are spelled so that
//! SQLite and Postgres read the same text (SQLite maps them to its affinities).

/// `(version, statements)`, applied in order, each version once, in one transaction.
pub const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        // One row per request. Never prompts, completions or keys: only the key's name.
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
        "CREATE INDEX requests_time ON requests (time_ms)",
        "CREATE INDEX requests_key_time ON requests (key_name, time_ms)",
        // Keys managed at run time: only the SHA-256 digest (hex) of the key is stored.
        "CREATE TABLE keys (
            name TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            policy TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            revoked_ms BIGINT
        )",
    ],
)];

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
