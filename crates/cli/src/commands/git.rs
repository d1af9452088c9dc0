//! `sandpit git clone`. A clone the sandbox's network policy refused says so: the rule, and
//! the `sandpit network` command that would allow the host (git itself only sees a 403 from
//! the egress proxy, which reads like a wrong password).

use std::net::IpAddr;

use anyhow::anyhow;
use sandpit_client::protocol::control::{EgressDecision, NetworkMode, NetworkPolicy};
use sandpit_client::{Client, ClientError, GitOptions};

use crate::cli::GitCommand;
use crate::shell::quote;

pub async fn run(client: &Client, command: GitCommand) -> anyhow::Result<()> {
    match command {
        GitCommand::Clone {
            id,
            repo,
            branch,
            depth,
            target_dir,
        } => {
            let options = GitOptions {
                branch,
                depth,
                target_dir,
                timeout_ms: None,
            };
            match client.sandbox(&id).git_checkout(&repo, &options).await {
                Ok(done) => println!("{} ({})", done.target_dir, done.branch),
                Err(e) => return Err(explain_refusal(client, &id, &repo, e).await),
            }
        }
    }
    Ok(())
}

/// The error of a failed clone of `repo` in sandbox `id`. When the egress log's newest entry
/// for the repository's host is a denial, the policy refused the clone, and the error says
/// which rule and how to allow the host; otherwise it is git's error as it came.
async fn explain_refusal(
    client: &Client,
    id: &str,
    repo: &str,
    error: ClientError,
) -> anyhow::Error {
    let Some(host) = url_host(repo) else {
        return error.into();
    };
    let (Ok(log), Ok(info)) = (client.egress_log(id).await, client.get(id).await) else {
        return error.into();
    };
    let newest = log
        .entries
        .iter()
        .rev()
        .find(|e| e.host.eq_ignore_ascii_case(&host));
    let Some(entry) = newest.filter(|e| e.decision == EgressDecision::Denied) else {
        return error.into();
    };
    let rule = entry.rule.as_deref().unwrap_or("policy");
    let reason = entry.reason.as_deref().unwrap_or("refused");
    let fix = match rule {
        // Rules the sandbox's own policy decides.
        "network-none" | "allow-list" | "allow-list-address" | "allow-list-port" => format!(
            "allow it with `{}`",
            allow_command(id, &info.network, &host)
        ),
        _ => "only the server's operator can open it (`sandpit serve --egress-grant`)".to_owned(),
    };
    anyhow!(
        "git clone refused: the network policy of sandbox {id} (mode {}) does not let it reach \
         {host} (rule {rule}: {reason}); {fix}",
        info.network.mode.as_str()
    )
}

/// `sandpit network ID --allow ...`: the current allow-list plus `host` (an address as a
/// one-address CIDR), keeping a `full` mode.
fn allow_command(id: &str, policy: &NetworkPolicy, host: &str) -> String {
    let pattern = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("{ip}/32"),
        Ok(IpAddr::V6(ip)) => format!("{ip}/128"),
        Err(_) => host.to_owned(),
    };
    let mut command = format!("sandpit network {id}");
    if policy.mode == NetworkMode::Full {
        command.push_str(" --mode full");
    }
    let allow = policy.allow.iter().filter(|a| **a != pattern);
    for a in allow.chain(std::iter::once(&pattern)) {
        command.push_str(" --allow ");
        command.push_str(&quote(a));
    }
    command
}

/// The host of a `scheme://[user@]host[:port]/...` URL (brackets of an IPv6 address removed);
/// `None` for other forms (`git@host:path` goes over SSH, not through the egress proxy).
fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_urls() {
        assert_eq!(
            url_host("http://git.example.test:8080/r.git").as_deref(),
            Some("git.example.test")
        );
        assert_eq!(
            url_host("https://user:tok@GitHub.com/o/r").as_deref(),
            Some("github.com")
        );
        assert_eq!(url_host("http://[::1]:9/r").as_deref(), Some("::1"));
        assert_eq!(url_host("git@github.com:o/r.git"), None);
    }

    #[test]
    fn the_allow_command_keeps_the_list() {
        let policy = NetworkPolicy {
            mode: NetworkMode::Allowlist,
            allow: vec!["pypi.org".into(), "*.npmjs.org".into()],
        };
        assert_eq!(
            allow_command("box", &policy, "git.example.test"),
            "sandpit network box --allow pypi.org --allow '*.npmjs.org' --allow git.example.test"
        );
        let none = NetworkPolicy::default();
        assert_eq!(
            allow_command("box", &none, "10.0.0.7"),
            "sandpit network box --allow 10.0.0.7/32"
        );
    }
}
