//! The schema history of [`crate::PostgresStore`]: the same versions as SQLite's
//! ([`crate::migrations`]), each written for PostgreSQL. A version added to SQLite gets its
//! PostgreSQL twin here under the same number (a test checks both lists have the same numbers).
//! Append new versions; never edit a released one.
//!
//! Dialect: SQLite's `INTEGER` becomes `BIGINT` (times, sizes) or `BOOLEAN` (flags) or
//! `INTEGER` (ports, exit codes); JSON columns stay `TEXT` holding the same JSON.

/// `(version, sql)` in order. Each runs once, inside a transaction, and is recorded in
/// `schema_migrations`.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE tenants (
            name        TEXT PRIMARY KEY,
            created_at  BIGINT NOT NULL
        );
        CREATE TABLE api_keys (
            key_sha256  TEXT PRIMARY KEY,
            tenant      TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
            created_at  BIGINT NOT NULL
        );
        CREATE TABLE sandboxes (
            tenant          TEXT NOT NULL REFERENCES tenants(name),
            id              TEXT NOT NULL,
            internal_id     TEXT NOT NULL UNIQUE,
            image           TEXT NOT NULL,
            state           TEXT NOT NULL,
            sleep_after     BIGINT NOT NULL,
            keep_alive      BOOLEAN NOT NULL,
            ephemeral       BOOLEAN NOT NULL,
            env             TEXT NOT NULL,
            limits          TEXT NOT NULL,
            slot            BIGINT NOT NULL UNIQUE,
            created_at      BIGINT NOT NULL,
            last_active_at  BIGINT NOT NULL,
            PRIMARY KEY (tenant, id)
        );
        CREATE INDEX sandboxes_state ON sandboxes(state);",
    ),
    (
        2,
        "CREATE TABLE settings (
            key    TEXT PRIMARY KEY,
            value  TEXT NOT NULL
        );",
    ),
    (
        3,
        "CREATE TABLE archived_processes (
            sandbox         TEXT NOT NULL,
            process_id      TEXT NOT NULL,
            pid             BIGINT,
            command         TEXT NOT NULL,
            status          TEXT NOT NULL,
            exit_code       INTEGER,
            start_time      TEXT NOT NULL,
            end_time        TEXT,
            session_id      TEXT,
            stdout          TEXT NOT NULL,
            stderr          TEXT NOT NULL,
            stdout_dropped  BIGINT NOT NULL,
            stderr_dropped  BIGINT NOT NULL,
            archived_at     BIGINT NOT NULL,
            PRIMARY KEY (sandbox, process_id)
        );",
    ),
    (
        4,
        "CREATE TABLE exposed_ports (
            tenant      TEXT NOT NULL,
            sandbox_id  TEXT NOT NULL,
            port        INTEGER NOT NULL,
            name        TEXT,
            token       TEXT NOT NULL,
            created_at  BIGINT NOT NULL,
            PRIMARY KEY (tenant, sandbox_id, port)
        );",
    ),
    (
        5,
        "CREATE TABLE sandbox_network (
            sandbox  TEXT PRIMARY KEY,
            policy   TEXT NOT NULL,
            secrets  TEXT NOT NULL,
            ca_cert  TEXT,
            ca_key   TEXT
        );",
    ),
    (
        6,
        "ALTER TABLE sandbox_network ADD COLUMN operator_policy BOOLEAN NOT NULL DEFAULT FALSE;",
    ),
    (
        7,
        "CREATE TABLE tenant_quotas (
            tenant      TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
            quota       TEXT NOT NULL,
            updated_at  BIGINT NOT NULL
        );",
    ),
    (
        8,
        "ALTER TABLE api_keys ADD COLUMN key_id TEXT;
        UPDATE api_keys SET key_id = substr(key_sha256, 1, 16);
        CREATE UNIQUE INDEX api_keys_key_id ON api_keys(key_id);
        ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
        CREATE TABLE audit_log (
            seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant  TEXT NOT NULL,
            at      BIGINT NOT NULL,
            actor   TEXT NOT NULL,
            action  TEXT NOT NULL,
            target  TEXT NOT NULL,
            result  TEXT NOT NULL,
            detail  TEXT
        );
        CREATE INDEX audit_log_tenant ON audit_log(tenant, seq);",
    ),
    (
        9,
        "ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE sandboxes ADD COLUMN expires_at BIGINT;
        CREATE INDEX sandboxes_expires_at ON sandboxes(expires_at) WHERE expires_at IS NOT NULL;",
    ),
    (
        10,
        "ALTER TABLE sandboxes ADD COLUMN keep_alive_while_busy BOOLEAN NOT NULL DEFAULT TRUE;",
    ),
    (11, "ALTER TABLE archived_processes ADD COLUMN reason TEXT;"),
    (
        12,
        // As in SQLite: isolation tier, uid ranges handed to the driver. PostgreSQL can drop
        // the column in place.
        "CREATE TABLE legacy_uid_ranges (
            internal_id  TEXT PRIMARY KEY,
            uid_base     BIGINT NOT NULL
        );
        INSERT INTO legacy_uid_ranges (internal_id, uid_base)
            SELECT internal_id, 100000 + slot * 65536 FROM sandboxes;
        ALTER TABLE sandboxes DROP COLUMN slot;
        ALTER TABLE sandboxes ADD COLUMN isolation TEXT NOT NULL DEFAULT 'standard';",
    ),
    (
        13,
        "CREATE TABLE backups (
            id            TEXT PRIMARY KEY,
            tenant        TEXT NOT NULL,
            sandbox_id    TEXT NOT NULL,
            dir           TEXT NOT NULL,
            name          TEXT,
            state         TEXT NOT NULL,
            size_bytes    BIGINT NOT NULL,
            raw_bytes     BIGINT NOT NULL,
            sha256        TEXT NOT NULL,
            created_at    BIGINT NOT NULL,
            expires_at    BIGINT NOT NULL
        );
        CREATE INDEX backups_tenant ON backups(tenant, created_at);
        CREATE INDEX backups_expires ON backups(expires_at);",
    ),
    (
        14,
        "CREATE TABLE snapshots (
            id          TEXT PRIMARY KEY,
            tenant      TEXT NOT NULL REFERENCES tenants(name),
            name        TEXT,
            sandbox_id  TEXT NOT NULL,
            image       TEXT NOT NULL,
            isolation   TEXT NOT NULL,
            size_bytes  BIGINT NOT NULL,
            created_at  BIGINT NOT NULL
        );
        CREATE INDEX snapshots_tenant ON snapshots(tenant, created_at);
        CREATE TABLE sandbox_snapshots (
            tenant       TEXT NOT NULL,
            sandbox_id   TEXT NOT NULL,
            snapshot_id  TEXT NOT NULL,
            PRIMARY KEY (tenant, sandbox_id)
        );
        CREATE INDEX sandbox_snapshots_snapshot ON sandbox_snapshots(snapshot_id);",
    ),
    (
        15,
        "CREATE TABLE sandbox_mounts (
            sandbox      TEXT NOT NULL,
            mount_path   TEXT NOT NULL,
            bucket       TEXT NOT NULL,
            endpoint     TEXT NOT NULL,
            prefix       TEXT,
            region       TEXT,
            read_only    BOOLEAN NOT NULL,
            credentials  TEXT NOT NULL,
            created_at   BIGINT NOT NULL,
            PRIMARY KEY (sandbox, mount_path)
        );",
    ),
    (
        30,
        "CREATE TABLE nodes (
            id              TEXT PRIMARY KEY,
            address         TEXT NOT NULL,
            boot_id         TEXT NOT NULL,
            capacity        TEXT NOT NULL,
            last_heartbeat  BIGINT NOT NULL,
            registered_at   BIGINT NOT NULL
        );
        CREATE TABLE sandbox_nodes (
            sandbox  TEXT PRIMARY KEY,
            node     TEXT NOT NULL
        );
        CREATE INDEX sandbox_nodes_node ON sandbox_nodes(node);",
    ),
];

/// Key of the advisory lock that serialises migrations of replicas starting together.
const MIGRATION_LOCK: i64 = 0x5341_4e44_5049_5401; // "SANDPIT" + 1

/// Applies the migrations numbered below `version` that are not applied yet, each in its own
/// transaction under an advisory lock (replicas starting at once apply each version once).
pub(crate) async fn migrate_before(
    client: &mut tokio_postgres::Client,
    version: i64,
) -> Result<(), tokio_postgres::Error> {
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v < version) {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version     BIGINT PRIMARY KEY,
                applied_at  BIGINT NOT NULL
            );",
        )
        .await?;
        // Every version not applied yet, not only those above the newest (numbers are
        // reserved per branch, as for SQLite).
        let applied = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[v])
            .await?
            .is_some();
        if !applied {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) \
                 VALUES ($1, extract(epoch FROM now())::bigint)",
                &[v],
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}
