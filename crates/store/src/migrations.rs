//! Versioned schema migrations. Append new versions; never edit a released one.

use rusqlite::Connection;

/// `(version, sql)` in order. Each runs once, inside a transaction, and is recorded in
/// `schema_migrations`.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE tenants (
        name        TEXT PRIMARY KEY,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        key_sha256  TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE sandboxes (
        tenant          TEXT NOT NULL REFERENCES tenants(name),
        id              TEXT NOT NULL,
        internal_id     TEXT NOT NULL UNIQUE,
        image           TEXT NOT NULL,
        state           TEXT NOT NULL,
        sleep_after     INTEGER NOT NULL,
        keep_alive      INTEGER NOT NULL,
        ephemeral       INTEGER NOT NULL,
        env             TEXT NOT NULL,
        limits          TEXT NOT NULL,
        slot            INTEGER NOT NULL UNIQUE,
        created_at      INTEGER NOT NULL,
        last_active_at  INTEGER NOT NULL,
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
            pid             INTEGER,
            command         TEXT NOT NULL,
            status          TEXT NOT NULL,
            exit_code       INTEGER,
            start_time      TEXT NOT NULL,
            end_time        TEXT,
            session_id      TEXT,
            stdout          TEXT NOT NULL,
            stderr          TEXT NOT NULL,
            stdout_dropped  INTEGER NOT NULL,
            stderr_dropped  INTEGER NOT NULL,
            archived_at     INTEGER NOT NULL,
            PRIMARY KEY (sandbox, process_id)
        );",
    ),
    (
        4,
        // Rows outlive their sandbox: a preview URL of a destroyed sandbox answers 410, not 404.
        "CREATE TABLE exposed_ports (
            tenant      TEXT NOT NULL,
            sandbox_id  TEXT NOT NULL,
            port        INTEGER NOT NULL,
            name        TEXT,
            token       TEXT NOT NULL,
            created_at  INTEGER NOT NULL,
            PRIMARY KEY (tenant, sandbox_id, port)
        );",
    ),
    (
        5,
        // Keyed by internal id; deleted with the sandbox.
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
        // 1: the policy was set with the admin key, so its CIDRs may open private ranges.
        "ALTER TABLE sandbox_network ADD COLUMN operator_policy INTEGER NOT NULL DEFAULT 0;",
    ),
    (
        7,
        // One row per tenant with a quota of its own (JSON of `TenantQuota`, so new kinds of
        // usage join as new fields); tenants without a row get the server's default.
        "CREATE TABLE tenant_quotas (
            tenant      TEXT PRIMARY KEY REFERENCES tenants(name) ON DELETE CASCADE,
            quota       TEXT NOT NULL,
            updated_at  INTEGER NOT NULL
        );",
    ),
    (
        8,
        // API keys get a public id (the first 16 hex digits of their digest: unique in practice
        // and derivable for keys made before) and a last-use time; the audit log is bounded per
        // tenant by the store.
        "ALTER TABLE api_keys ADD COLUMN key_id TEXT;
        UPDATE api_keys SET key_id = substr(key_sha256, 1, 16);
        CREATE UNIQUE INDEX api_keys_key_id ON api_keys(key_id);
        ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
        CREATE TABLE audit_log (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant  TEXT NOT NULL,
            at      INTEGER NOT NULL,
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
        // Labels (JSON object, filtered with json_extract) and the instant a sandbox with a
        // `ttl` is destroyed (Unix ms; the reaper finds due ones through the partial index).
        "ALTER TABLE sandboxes ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE sandboxes ADD COLUMN expires_at INTEGER;
        CREATE INDEX sandboxes_expires_at ON sandboxes(expires_at) WHERE expires_at IS NOT NULL;",
    ),
    (
        10,
        // On for sandboxes made before: running background processes keep them awake.
        "ALTER TABLE sandboxes ADD COLUMN keep_alive_while_busy INTEGER NOT NULL DEFAULT 1;",
    ),
    (
        11,
        // Why an archived process ended when not by itself (`oom`), so it survives sleep.
        "ALTER TABLE archived_processes ADD COLUMN reason TEXT;",
    ),
    (
        12,
        // Sandboxes get an isolation tier (old rows: `standard`), and uid ranges become the
        // local driver's business: the slot column goes, each old sandbox's range (by the
        // formula the store used, 100000 + slot * 65536) waits in `legacy_uid_ranges` until
        // the server hands it to the driver at start. The table is rebuilt because SQLite
        // cannot drop a UNIQUE column.
        "CREATE TABLE legacy_uid_ranges (
            internal_id  TEXT PRIMARY KEY,
            uid_base     INTEGER NOT NULL
        );
        INSERT INTO legacy_uid_ranges (internal_id, uid_base)
            SELECT internal_id, 100000 + slot * 65536 FROM sandboxes;
        CREATE TABLE sandboxes_v12 (
            tenant                 TEXT NOT NULL REFERENCES tenants(name),
            id                     TEXT NOT NULL,
            internal_id            TEXT NOT NULL UNIQUE,
            image                  TEXT NOT NULL,
            state                  TEXT NOT NULL,
            sleep_after            INTEGER NOT NULL,
            keep_alive             INTEGER NOT NULL,
            ephemeral              INTEGER NOT NULL,
            env                    TEXT NOT NULL,
            limits                 TEXT NOT NULL,
            created_at             INTEGER NOT NULL,
            last_active_at         INTEGER NOT NULL,
            labels                 TEXT NOT NULL DEFAULT '{}',
            expires_at             INTEGER,
            keep_alive_while_busy  INTEGER NOT NULL DEFAULT 1,
            isolation              TEXT NOT NULL DEFAULT 'standard',
            PRIMARY KEY (tenant, id)
        );
        INSERT INTO sandboxes_v12 (tenant, id, internal_id, image, state, sleep_after,
                keep_alive, ephemeral, env, limits, created_at, last_active_at, labels,
                expires_at, keep_alive_while_busy)
            SELECT tenant, id, internal_id, image, state, sleep_after, keep_alive, ephemeral,
                env, limits, created_at, last_active_at, labels, expires_at,
                keep_alive_while_busy
            FROM sandboxes;
        DROP TABLE sandboxes;
        ALTER TABLE sandboxes_v12 RENAME TO sandboxes;
        CREATE INDEX sandboxes_state ON sandboxes(state);
        CREATE INDEX sandboxes_expires_at ON sandboxes(expires_at) WHERE expires_at IS NOT NULL;",
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
            size_bytes    INTEGER NOT NULL,
            raw_bytes     INTEGER NOT NULL,
            sha256        TEXT NOT NULL,
            created_at    INTEGER NOT NULL,
            expires_at    INTEGER NOT NULL
        );
        CREATE INDEX backups_tenant ON backups(tenant, created_at);
        CREATE INDEX backups_expires ON backups(expires_at);",
    ),
    (
        14,
        // Snapshots (their layers are the driver's) and which sandbox was created from which
        // snapshot (rows go with the sandbox), so a snapshot in use is not deleted.
        "CREATE TABLE snapshots (
            id          TEXT PRIMARY KEY,
            tenant      TEXT NOT NULL REFERENCES tenants(name),
            name        TEXT,
            sandbox_id  TEXT NOT NULL,
            image       TEXT NOT NULL,
            isolation   TEXT NOT NULL,
            size_bytes  INTEGER NOT NULL,
            created_at  INTEGER NOT NULL
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
        // Bucket mounts of a sandbox (by internal id): re-made at every start, deleted with the
        // sandbox. `credentials` is sealed with the data key (JSON of the key pair).
        "CREATE TABLE sandbox_mounts (
            sandbox      TEXT NOT NULL,
            mount_path   TEXT NOT NULL,
            bucket       TEXT NOT NULL,
            endpoint     TEXT NOT NULL,
            prefix       TEXT,
            region       TEXT,
            read_only    INTEGER NOT NULL,
            credentials  TEXT NOT NULL,
            created_at   INTEGER NOT NULL,
            PRIMARY KEY (sandbox, mount_path)
        );",
    ),
    (
        30,
        // Cluster mode: the nodes (registered at join, heart-beating) and where each sandbox
        // (by internal id) is placed.
        "CREATE TABLE nodes (
            id              TEXT PRIMARY KEY,
            address         TEXT NOT NULL,
            boot_id         TEXT NOT NULL,
            capacity        TEXT NOT NULL,
            last_heartbeat  INTEGER NOT NULL,
            registered_at   INTEGER NOT NULL
        );
        CREATE TABLE sandbox_nodes (
            sandbox  TEXT PRIMARY KEY,
            node     TEXT NOT NULL
        );
        CREATE INDEX sandbox_nodes_node ON sandbox_nodes(node);",
    ),
];

/// Brings the schema to the newest version.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    migrate_before(conn, i64::MAX)
}

/// Applies the migrations numbered below `version` that are not applied yet.
pub(crate) fn migrate_before(conn: &mut Connection, version: i64) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            applied_at  INTEGER NOT NULL
        );",
    )?;
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Every version not applied yet, not only those above the newest: numbers are reserved per
    // branch, so a database may have met 8 before 6 and 7 were merged.
    let pending = MIGRATIONS
        .iter()
        .filter(|(v, _)| *v < version && !applied.contains(v));
    for (version, sql) in pending {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
            [version],
        )?;
        tx.commit()?;
    }
    Ok(())
}
