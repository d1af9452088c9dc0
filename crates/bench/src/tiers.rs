//! Start and exec rows per isolation tier, side by side: the same cold create → first exec and
//! warm exec round trips against every tier the server offers (`standard`, and `gvisor` when
//! runsc is installed).

use std::time::Instant;

use sandpit_client::Client;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::control::{CreateSandboxRequest, Isolation};

use crate::stats::Samples;
use crate::{Row, Section, exec_true};

/// Samples per tier.
pub struct Counts {
    pub cold: usize,
    pub warm: usize,
}

pub async fn measure(client: &Client, counts: &Counts) -> anyhow::Result<Section> {
    let mut section = Section::default();
    for tier in Isolation::ALL {
        match measure_tier(client, tier, counts).await {
            Ok(rows) => section.rows.extend(rows),
            Err(e)
                if e.downcast_ref::<sandpit_client::ClientError>()
                    .and_then(|e| e.code())
                    == Some(ErrorCode::IsolationUnavailable) =>
            {
                section.notes.push(format!(
                    "Tier `{tier}` not measured: this server does not offer it."
                ));
            }
            Err(e) => return Err(e),
        }
    }
    section.notes.push(
        "Tier rows: `[tier]` cold create → first `exec true` and warm `exec true` (default \
         session), the same requests against each isolation tier of one server."
            .into(),
    );
    Ok(section)
}

async fn measure_tier(
    client: &Client,
    tier: Isolation,
    counts: &Counts,
) -> anyhow::Result<Vec<Row>> {
    let run = std::process::id();
    eprintln!(
        "tier {tier}: cold x{}, warm x{}...",
        counts.cold, counts.warm
    );
    let create = |id: &str| CreateSandboxRequest {
        id: Some(id.to_owned()),
        isolation: Some(tier),
        ..Default::default()
    };
    let mut cold = Samples::default();
    for i in 0..counts.cold {
        let id = format!("tier-{tier}-{run}-{i}");
        let t = Instant::now();
        client.create(&create(&id)).await?;
        let result = exec_true(&client.sandbox(&id)).await;
        cold.push(t.elapsed());
        client.destroy(&id).await?;
        result?;
    }
    let id = format!("tier-{tier}-{run}-warm");
    client.create(&create(&id)).await?;
    let sandbox = client.sandbox(&id);
    let mut warm = Samples::default();
    let result = async {
        for _ in 0..10 {
            exec_true(&sandbox).await?;
        }
        for _ in 0..counts.warm {
            let t = Instant::now();
            exec_true(&sandbox).await?;
            warm.push(t.elapsed());
        }
        anyhow::Ok(())
    }
    .await;
    client.destroy(&id).await?;
    result?;
    Ok(vec![
        Row {
            name: format!(
                "[{tier}] cold create → first `exec true` (N={})",
                cold.len()
            ),
            samples: cold,
            target: String::new(),
        },
        Row {
            name: format!("[{tier}] warm `exec true` round trip (N={})", warm.len()),
            samples: warm,
            target: String::new(),
        },
    ])
}
