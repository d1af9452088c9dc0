//! The drivers of a server, one per isolation tier it offers. The `standard` tier always has
//! one; more are registered when the server is built (see [`Drivers::with`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::Isolation;
use sandpit_runtime::Driver;

use crate::error::{ApiError, ApiResult};

/// Drivers by isolation tier.
#[derive(Clone)]
pub struct Drivers {
    by_tier: BTreeMap<Isolation, Arc<dyn Driver>>,
}

impl Drivers {
    /// A server whose `standard` tier runs on `standard`.
    pub fn new(standard: Arc<dyn Driver>) -> Self {
        Drivers {
            by_tier: BTreeMap::from([(Isolation::Standard, standard)]),
        }
    }

    /// Adds (or replaces) the driver of `tier`.
    pub fn with(mut self, tier: Isolation, driver: Arc<dyn Driver>) -> Self {
        self.by_tier.insert(tier, driver);
        self
    }

    /// The driver of `tier`; `ISOLATION_UNAVAILABLE` when this server has none.
    pub fn get(&self, tier: Isolation) -> ApiResult<&Arc<dyn Driver>> {
        self.by_tier.get(&tier).ok_or_else(|| {
            let offered: Vec<&str> = self.by_tier.keys().map(|t| t.as_str()).collect();
            ApiError::new(
                ErrorCode::IsolationUnavailable,
                format!(
                    "isolation \"{tier}\" is not available on this server (it offers: {})",
                    offered.join(", ")
                ),
            )
            .context("isolation", tier.as_str())
        })
    }

    /// The `standard` tier's driver.
    pub fn standard(&self) -> &Arc<dyn Driver> {
        &self.by_tier[&Isolation::Standard]
    }

    /// Every tier with its driver.
    pub fn iter(&self) -> impl Iterator<Item = (Isolation, &Arc<dyn Driver>)> {
        self.by_tier.iter().map(|(t, d)| (*t, d))
    }
}
