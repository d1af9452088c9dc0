mod audit;
mod backups;
mod encryption;
mod keys;
mod mounts;
mod network;
mod ports;
mod processes;
mod quotas;
mod sandboxes;
mod snapshots;

use std::collections::BTreeMap;

use sandpit_protocol::control::{Isolation, Limits, SandboxState};
use sandpit_protocol::time::SleepAfter;
use sandpit_store::{NewSandbox, SandboxOptions};

pub fn new_sandbox(tenant: &str, id: &str) -> NewSandbox {
    NewSandbox {
        tenant: tenant.into(),
        id: id.into(),
        internal_id: format!("{tenant}-{id}"),
        options: SandboxOptions {
            image: "default".into(),
            sleep_after: SleepAfter::DEFAULT,
            keep_alive: false,
            keep_alive_while_busy: true,
            ephemeral: false,
            isolation: Isolation::Standard,
            env: BTreeMap::from([("A".into(), "1".into())]),
            limits: Limits {
                memory_mb: Some(256),
                cpus: Some(0.5),
                ..Limits::default()
            },
            labels: BTreeMap::new(),
            expires_at_ms: None,
        },
        state: SandboxState::Creating,
        now_ms: 1_000,
    }
}
