//! `sandpit network` and `sandpit secret`, and the network flags of `sandpit create`: the
//! outbound network policy of a sandbox and the secrets its egress proxy injects.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use sandpit_client::Client;
use sandpit_client::protocol::control::{
    EgressDecision, EgressLogPage, NetworkMode, NetworkPolicy, SandboxInfo, SecretInfo, SecretSpec,
};

use crate::commands::sandbox::render_table;

/// Network and secret flags of `sandpit create`.
#[derive(Debug, Args)]
pub struct CreateNetworkFlags {
    /// Outbound network: none (loopback only, the default), allowlist or full.
    #[arg(long = "network", value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<NetworkMode>,
    /// Domain pattern with an optional port (example.com, *.example.com, example.com:443) or
    /// CIDR the sandbox may reach
    /// (repeatable; implies --network allowlist).
    #[arg(long = "allow", value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// Secret for the egress proxy to inject, as `NAME=VALUE;hosts=H1,H2[;header=HEADER]`, or
    /// `NAME;hosts=...` to take the value from this shell's variable NAME (repeatable).
    #[arg(long = "secret", value_name = "SPEC", value_parser = SecretParser)]
    pub secrets: Vec<SecretArg>,
}

impl CreateNetworkFlags {
    pub fn policy(&self) -> Option<NetworkPolicy> {
        policy(self.mode, &self.allow)
    }

    pub fn secrets(&self) -> anyhow::Result<Option<BTreeMap<String, SecretSpec>>> {
        if self.secrets.is_empty() {
            return Ok(None);
        }
        resolve_secrets(&self.secrets).map(Some)
    }
}

#[derive(Debug, Args)]
pub struct NetworkArgs {
    /// Sandbox id.
    pub id: String,
    /// New mode: none, allowlist or full. Without --mode and --allow, prints the policy.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<NetworkMode>,
    /// Domain pattern or CIDR to allow (repeatable; replaces the list; implies allowlist
    /// when --mode is absent).
    #[arg(long = "allow", value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// Print the egress log instead: each request through the egress proxy, allowed or
    /// denied (with the reason), and its bytes.
    #[arg(long, conflicts_with_all = ["mode", "allow"])]
    pub log: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// List a sandbox's secrets (names, hosts and headers; never values).
    Ls {
        /// Sandbox id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a sandbox's secrets by these: `NAME=VALUE;hosts=H1,H2[;header=HEADER]`, or
    /// `NAME;hosts=...` to take the value from this shell's variable NAME.
    Set {
        /// Sandbox id.
        id: String,
        #[arg(required = true, value_name = "SPEC", value_parser = SecretParser)]
        secrets: Vec<SecretArg>,
    },
    /// Remove all of a sandbox's secrets.
    Clear {
        /// Sandbox id.
        id: String,
    },
}

/// A parsed `--secret` spec; `value` is `None` when it comes from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArg {
    pub name: String,
    pub value: Option<String>,
    pub hosts: Vec<String>,
    pub header: Option<String>,
}

pub async fn network(client: &Client, args: NetworkArgs) -> anyhow::Result<()> {
    if args.log {
        let page = client.egress_log(&args.id).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&page)?);
        } else {
            print!("{}", log_table(&page));
        }
        return Ok(());
    }
    let info = match policy(args.mode, &args.allow) {
        Some(policy) => client.set_network(&args.id, &policy).await?,
        None => client.get(&args.id).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info.network)?);
    } else {
        print!("{}", describe_policy(&info.network));
    }
    Ok(())
}

/// The egress log as a table: time, decision, destination, bytes and the reason.
fn log_table(page: &EgressLogPage) -> String {
    let rows: Vec<[String; 6]> = page
        .entries
        .iter()
        .map(|e| {
            let decision = match e.decision {
                EgressDecision::Allowed => "allowed",
                EgressDecision::Denied => "denied",
                EgressDecision::Failed => "failed",
            };
            [
                e.time.clone(),
                decision.to_owned(),
                format!("{} {}:{}", e.kind, e.host, e.port),
                e.bytes_up.to_string(),
                e.bytes_down.to_string(),
                e.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = render_table(
        ["TIME", "DECISION", "DESTINATION", "UP", "DOWN", "REASON"],
        &rows,
    );
    if page.dropped > 0 {
        out.push_str(&format!("({} older entries dropped)\n", page.dropped));
    }
    out
}

pub async fn secret(client: &Client, command: SecretCommand) -> anyhow::Result<()> {
    match command {
        SecretCommand::Ls { id, json } => {
            let info = client.get(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info.secrets)?);
            } else {
                print!("{}", secret_table(&info.secrets));
            }
        }
        SecretCommand::Set { id, secrets } => {
            let info = client.set_secrets(&id, &resolve_secrets(&secrets)?).await?;
            print!("{}", secret_table(&info.secrets));
        }
        SecretCommand::Clear { id } => {
            let info: SandboxInfo = client.set_secrets(&id, &BTreeMap::new()).await?;
            println!("{} secrets removed", info.id);
        }
    }
    Ok(())
}

/// The policy the flags ask for: `--allow` alone means an allowlist; no flags, no change.
fn policy(mode: Option<NetworkMode>, allow: &[String]) -> Option<NetworkPolicy> {
    let mode = match mode {
        Some(mode) => mode,
        None if !allow.is_empty() => NetworkMode::Allowlist,
        None => return None,
    };
    Some(NetworkPolicy {
        mode,
        allow: allow.to_vec(),
    })
}

fn describe_policy(policy: &NetworkPolicy) -> String {
    let mut out = format!("mode   {}\n", policy.mode.as_str());
    for entry in &policy.allow {
        out.push_str(&format!("allow  {entry}\n"));
    }
    out
}

fn secret_table(secrets: &[SecretInfo]) -> String {
    let rows: Vec<[String; 3]> = secrets
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.hosts.join(","),
                s.header.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render_table(["NAME", "HOSTS", "HEADER"], &rows)
}

/// Fills values taken from the environment; refuses a name given twice.
fn resolve_secrets(args: &[SecretArg]) -> anyhow::Result<BTreeMap<String, SecretSpec>> {
    let mut out = BTreeMap::new();
    for arg in args {
        let value = match &arg.value {
            Some(value) => value.clone(),
            None => std::env::var(&arg.name).map_err(|_| {
                anyhow!(
                    "secret {} has no value and ${} is not set",
                    arg.name,
                    arg.name
                )
            })?,
        };
        let spec = SecretSpec {
            value,
            hosts: arg.hosts.clone(),
            header: arg.header.clone(),
        };
        if out.insert(arg.name.clone(), spec).is_some() {
            bail!("secret {} given twice", arg.name);
        }
    }
    Ok(out)
}

fn parse_mode(s: &str) -> Result<NetworkMode, String> {
    NetworkMode::parse(s).ok_or_else(|| format!("expected none, allowlist or full, got {s:?}"))
}

/// The clap parser of `--secret` / `secret set` specs. A refused spec is not echoed back:
/// clap's message for a function parser quotes the whole value, secret included.
#[derive(Debug, Clone, Copy)]
pub struct SecretParser;

impl clap::builder::TypedValueParser for SecretParser {
    type Value = SecretArg;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretArg, clap::Error> {
        let refused = |message: String| {
            let arg = arg.map_or_else(|| "SPEC".to_owned(), ToString::to_string);
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid {arg}: {message}\n"),
            )
            .with_cmd(command)
        };
        let spec = value
            .to_str()
            .ok_or_else(|| refused("not UTF-8".to_owned()))?;
        parse_secret(spec).map_err(refused)
    }
}

/// Parses `NAME[=VALUE];hosts=H1,H2[;header=HEADER]`. The options are taken from the end, so
/// a value may itself contain `;` or `=`.
pub fn parse_secret(s: &str) -> Result<SecretArg, String> {
    let mut rest = s;
    let (mut hosts, mut header) = (None, None);
    while let Some((head, tail)) = rest.rsplit_once(';') {
        if let Some(list) = tail.strip_prefix("hosts=") {
            hosts.get_or_insert_with(|| {
                list.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            });
        } else if let Some(name) = tail.strip_prefix("header=") {
            header.get_or_insert_with(|| name.trim().to_owned());
        } else {
            break;
        }
        rest = head;
    }
    if hosts.as_ref().is_none_or(Vec::is_empty)
        && let Some(key) = unknown_option(rest)
    {
        // Without hosts the options did not parse; an option-like piece is most likely a
        // misspelt option (`host=`), so name it rather than only the missing one.
        let name = rest.split([';', '=']).next().unwrap_or_default();
        return Err(format!(
            "secret {name}: unknown option {key:?} (the options are hosts=H1,H2 and header=NAME)"
        ));
    }
    let (name, value) = match rest.split_once('=') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (rest, None),
    };
    let valid_name = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid_name {
        return Err(format!(
            "secret name {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    let hosts = hosts.unwrap_or_default();
    if hosts.is_empty() {
        return Err(format!(
            "secret {name} needs ;hosts=HOST[,HOST...] (where it may be sent)"
        ));
    }
    if header.as_deref() == Some("") {
        return Err(format!("secret {name} has an empty header name"));
    }
    Ok(SecretArg {
        name: name.to_owned(),
        value,
        hosts,
        header,
    })
}

/// The key of the last `;key=...` piece after the name, if it looks like an option.
fn unknown_option(spec: &str) -> Option<&str> {
    let (_name, options) = spec.split_once(';')?;
    options.rsplit(';').find_map(|piece| {
        let (key, _) = piece.split_once('=')?;
        let option_like = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_');
        option_like.then_some(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs() {
        assert_eq!(
            parse_secret("TOKEN=a;b=c;hosts=api.example.com, *.x.org;header=Authorization"),
            Ok(SecretArg {
                name: "TOKEN".into(),
                value: Some("a;b=c".into()),
                hosts: vec!["api.example.com".into(), "*.x.org".into()],
                header: Some("Authorization".into()),
            })
        );
        let from_env = parse_secret("GH_TOKEN;hosts=github.com").unwrap();
        assert_eq!(from_env.value, None);
        assert_eq!(from_env.header, None);
        assert!(parse_secret("TOKEN=x").unwrap_err().contains("hosts"));
        assert!(
            parse_secret("TOKEN=x;hosts=")
                .unwrap_err()
                .contains("hosts")
        );
        assert!(parse_secret("1A=x;hosts=h").unwrap_err().contains("name"));
        assert!(parse_secret("A-B=x;hosts=h").unwrap_err().contains("name"));
        assert!(parse_secret("A=x;hosts=h;header=").is_err());
        // A misspelt option is named, whether or not the value is inline.
        for spec in ["TOKEN=x;host=api.example.com", "TOKEN;host=api.example.com"] {
            assert_eq!(
                parse_secret(spec).unwrap_err(),
                "secret TOKEN: unknown option \"host\" (the options are hosts=H1,H2 and header=NAME)"
            );
        }
        assert!(
            parse_secret("TOKEN=x;hedaer=Authorization")
                .unwrap_err()
                .contains("\"hedaer\"")
        );
    }

    #[test]
    fn flags_to_policy() {
        assert_eq!(policy(None, &[]), None);
        let allow = vec!["*.example.com".to_owned()];
        assert_eq!(
            policy(None, &allow),
            Some(NetworkPolicy {
                mode: NetworkMode::Allowlist,
                allow: allow.clone()
            })
        );
        assert_eq!(
            policy(Some(NetworkMode::None), &[]).map(|p| p.mode),
            Some(NetworkMode::None)
        );
        assert_eq!(parse_mode("full"), Ok(NetworkMode::Full));
        assert!(parse_mode("open").is_err());
    }

    #[test]
    fn secrets_come_from_the_spec_or_the_environment() {
        let args = [parse_secret("SANDPIT_TEST_UNSET_SECRET;hosts=h").unwrap()];
        let err = resolve_secrets(&args).unwrap_err().to_string();
        assert!(
            err.contains("$SANDPIT_TEST_UNSET_SECRET is not set"),
            "{err}"
        );
        let twice = [
            parse_secret("A=1;hosts=h").unwrap(),
            parse_secret("A=2;hosts=h").unwrap(),
        ];
        assert!(resolve_secrets(&twice).is_err());
        let map = resolve_secrets(&[parse_secret("A=1;hosts=h;header=X-Key").unwrap()]).unwrap();
        assert_eq!(map["A"].value, "1");
        assert_eq!(map["A"].header.as_deref(), Some("X-Key"));
    }
}
