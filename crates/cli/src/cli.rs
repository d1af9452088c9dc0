//! Command-line grammar (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use crate::commands::ctx::CtxCommand;
pub use crate::commands::env::EnvArgs;
pub use crate::commands::events::EventsArgs;
pub use crate::commands::expose::ExposeArgs;
pub use crate::commands::files::FilesCommand;
pub use crate::commands::keys::{AuditArgs, KeysCommand};
pub use crate::commands::mount::MountArgs;
pub use crate::commands::network::{CreateNetworkFlags, NetworkArgs, SecretCommand};
pub use crate::commands::quota::QuotaArgs;
pub use crate::commands::snapshot::{ForkArgs, SnapshotCommand};
pub use crate::commands::target::CreateFlag;
use sandpit_client::Language;
use sandpit_client::protocol::control::{Isolation, parse_label_selector};

/// Default data directory of the server (state, admin key, images).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/sandpit";

/// Examples in `sandpit --help`; a test parses each `sandpit ...` line.
const TOP_AFTER_HELP: &str = "\
--url, --key and --data-dir may also be given after the command (not after exec's or start's
command words, which are all passed on).

Examples:
  sandpit serve
  sandpit exec demo ls -la
  sandpit cp ./main.py demo:/work/main.py
  sandpit shell demo";

/// Examples in `sandpit exec --help`; a test parses each `sandpit ...` line.
const EXEC_EXAMPLES: &str = "\
Examples:
  sandpit exec demo ls -la
  sandpit exec demo -- ls -la
  sandpit exec --session s --cwd /tmp demo python3 -c 'print(2+2)'
  sandpit exec demo 'ls / | wc -l'";

/// Examples in `sandpit cp --help`; a test parses each `sandpit ...` line.
const CP_EXAMPLES: &str = "\
Examples:
  sandpit cp ./main.py demo:/workspace
  sandpit cp demo:/workspace/out.csv .
  sandpit cp -r ./src demo:/workspace/
  sandpit cp -r demo:/workspace/results ./results
  sandpit cp - demo:/workspace/input.txt";

#[derive(Debug, Parser)]
#[command(
    name = "sandpit",
    version,
    about = "Run untrusted code in isolated Linux sandboxes",
    after_help = TOP_AFTER_HELP
)]
pub struct Cli {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "SANDPIT_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub url: String,
    /// API key (default: the admin key in <data-dir>/admin.key).
    #[arg(long, global = true, env = "SANDPIT_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Server data directory (state, admin key, images).
    #[arg(long, global = true, env = "SANDPIT_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// Parses the process's arguments (exits with usage or help text as clap does).
pub fn parse() -> Cli {
    let matches = hide_inherited_globals(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Global options (`--url`, `--key`, `--data-dir`, `--images-dir`) are accepted after any
/// subcommand, but clap would list them again in the help of every subcommand; they are
/// described once, in the help of the command that declares them. A subcommand that already
/// has an argument of that id keeps it, so giving each one a hidden copy stops clap from
/// propagating the visible one while the value still reaches the top-level field.
fn hide_inherited_globals(mut command: clap::Command) -> clap::Command {
    let globals: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |mut sub| {
            for arg in &globals {
                if sub.get_arguments().all(|a| a.get_id() != arg.get_id()) {
                    sub = sub.arg(arg.clone().hide(true));
                }
            }
            hide_inherited_globals(sub)
        });
    }
    command
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (builds the default image first if it is missing); its state and admin
    /// key live in --data-dir (see `sandpit --help`).
    Serve(Box<ServeArgs>),
    /// Cluster set-up (see docs/cluster.md).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run a cluster node: the daemon that runs this machine's sandboxes for the control plane
    /// at --join (its state in --data-dir; see docs/cluster.md).
    Node(Box<NodeArgs>),
    /// Create a sandbox (or show the existing one with that id).
    Create(CreateArgs),
    /// List sandboxes.
    Ls(LsArgs),
    /// Show a sandbox: state, image, limits, usage, labels, expiry, network policy, secrets
    /// (names), env names, exposed ports, created and last-active times.
    Info {
        /// Sandbox id.
        id: String,
        /// Print JSON (the sandbox object plus `ports` and `usage`).
        #[arg(long)]
        json: bool,
    },
    /// Put a sandbox to sleep (its files are kept; the next call wakes it).
    Stop { id: String },
    /// Destroy sandboxes and their files.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a command in a sandbox (created on first use, said on stderr), streaming its
    /// output; exits with the command's exit code.
    #[command(after_help = EXEC_EXAMPLES)]
    Exec(ExecArgs),
    /// Run a Python, JavaScript or TypeScript file (or stdin) in a code context: output is
    /// printed live, text results go to stdout, images and HTML results to files named on
    /// stderr (sandpit-out-N.png ...). Exits with 1 if the code raised.
    Run(RunArgs),
    /// Copy files between this machine and a sandbox, as `cp` does: `cp ./a ID:/path`,
    /// `cp ID:/path ./a`, into an existing directory `cp ./a ID:/dir`; whole directories with
    /// -r; `-` is stdin or stdout (`cp - ID:/path`, `cp ID:/path -`).
    #[command(after_help = CP_EXAMPLES)]
    Cp(CpArgs),
    /// Attach this terminal to a shell in a sandbox; exits with the shell's exit code.
    Shell(ShellArgs),
    /// Manage the images sandboxes run on (works on the image directory directly).
    Image(ImageArgs),
    /// Start a command in the background in a sandbox; prints the process id.
    Start(StartArgs),
    /// List a sandbox's background processes.
    Ps {
        /// Sandbox id.
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a background process's output; with --follow, stream it live and exit with the
    /// process's exit code.
    Logs(LogsArgs),
    /// Kill a background process (its whole process tree), or all of them with --all.
    Kill(KillArgs),
    /// Print changes under a path in a sandbox, one line per event, until interrupted.
    Watch {
        /// Sandbox id.
        id: String,
        /// Path to watch (recursively).
        path: String,
    },
    /// Git operations inside a sandbox.
    Git {
        #[command(subcommand)]
        command: GitCommand,
    },
    /// Expose a port of a sandbox at a preview URL (HTTP and WebSocket); prints the URL.
    Expose(ExposeArgs),
    /// Withdraw the preview URL of a port.
    Unexpose {
        /// Sandbox id.
        id: String,
        port: u16,
    },
    /// List a sandbox's exposed ports and their preview URLs.
    Ports {
        /// Sandbox id.
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mount an S3 bucket at PATH inside a sandbox; the keys come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY and stay on the server's host (the sandbox never sees them).
    Mount(MountArgs),
    /// Unmount the bucket mounted at PATH.
    Unmount {
        /// Sandbox id.
        id: String,
        path: String,
    },
    /// List a sandbox's bucket mounts.
    Mounts {
        /// Sandbox id.
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show or change a sandbox's outbound network policy (applies at once).
    Network(NetworkArgs),
    /// Secrets the egress proxy injects into a sandbox's requests to their hosts.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Snapshots of sandboxes' file systems: create, ls, show, export, import, rm (see
    /// docs/persistence.md).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Fork a sandbox: snapshot it and start children from the snapshot; prints their ids.
    Fork(ForkArgs),
    /// Show a tenant's quota, usage and the server's per-sandbox maxima; `quota set` and
    /// `quota reset` change a tenant's quota (admin key).
    Quota(QuotaArgs),
    /// Backups of sandbox directories in the server's object store: create, ls, restore, rm.
    Backup {
        #[command(subcommand)]
        command: crate::commands::backup::BackupCommand,
    },
    /// API keys: create (admin), list, revoke and rotate.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the audit log of control-plane actions (newest first).
    Audit(AuditArgs),
    /// Follow the sandboxes' changes (created, started, stopped, updated, destroyed) as they
    /// happen, one line each, until interrupted.
    Events(EventsArgs),
    /// Set or unset environment variables of a sandbox for every later command and process.
    Env(EnvArgs),
    /// A sandbox's code contexts (interpreters of `sandpit run --context`).
    Ctx {
        #[command(subcommand)]
        command: CtxCommand,
    },
    /// Files of a sandbox.
    Files {
        #[command(subcommand)]
        command: FilesCommand,
    },
    /// Serve the sandbox tools to an AI agent over the Model Context Protocol on stdin/stdout
    /// (for an MCP client's configuration; see docs/mcp.md). Acts with --key on --url.
    Mcp,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Sandbox id.
    pub id: String,
    /// Process id to use (generated when absent).
    #[arg(long = "id", value_name = "PROCESS_ID")]
    pub process_id: Option<String>,
    /// Session to start the process from.
    #[arg(long)]
    pub session: Option<String>,
    /// Working directory of the process.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable for the process (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    #[command(flatten)]
    pub create: CreateFlag,
    /// The command (joined as for `exec`); every word from its first one on is part of it,
    /// so options of `start` go before that. `--` before it is optional.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Sandbox id.
    pub id: String,
    /// Process id.
    pub process: String,
    /// Stream output live until the process ends; exit with its exit code.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Sandbox id.
    pub id: String,
    /// Process id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub process: Option<String>,
    /// Kill every process of the sandbox.
    #[arg(long)]
    pub all: bool,
    /// Signal to send (e.g. SIGINT, INT; default SIGTERM, then SIGKILL after a grace period).
    #[arg(long, conflicts_with = "all")]
    pub signal: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GitCommand {
    /// Clone a repository into the sandbox; prints the directory.
    Clone {
        /// Sandbox id.
        id: String,
        /// Repository URL (http(s), git, ssh or file).
        #[arg(value_name = "URL")]
        repo: String,
        /// Branch to check out.
        #[arg(long)]
        branch: Option<String>,
        /// Shallow clone of this many commits.
        #[arg(long)]
        depth: Option<u64>,
        /// Where to clone (default /workspace/<repository name>).
        #[arg(long)]
        target_dir: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster's CA and join token in DIR (files 0600); prints the join token (also
    /// written to DIR/join-token). Give DIR to `serve --cluster-dir` and the token to nodes.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Where the node API (mutually authenticated TLS) listens.
    #[arg(long, default_value = "0.0.0.0:7071")]
    pub listen: SocketAddr,
    /// host:port the control plane reaches this node at (default: the listen address).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Serve plain-HTTP GET /healthz here (for kubelet probes).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
    /// URL of the control plane (any replica), e.g. http://sandpit:7070.
    #[arg(long, value_name = "URL")]
    pub join: String,
    /// The cluster's join token (`sandpit cluster init`).
    #[arg(long, env = "SANDPIT_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This node's id (default: kept in the data dir, a random one at first start).
    #[arg(long)]
    pub node_id: Option<String>,
    #[command(flatten)]
    pub images: ImagesDir,
    /// First host uid of the sandboxes' uid ranges: nodes sharing one host need disjoint
    /// ranges (each sandbox takes 65,536 uids).
    #[arg(long, default_value_t = sandpit_server::DEFAULT_FIRST_UID)]
    pub first_uid: u32,
    /// The cgroup that holds this node's sandboxes (nodes sharing one host need distinct ones).
    #[arg(long, value_name = "PATH", default_value = sandpit_server::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: String,
    /// Most sandboxes this node runs at once (what placement fills it up to).
    #[arg(long, default_value_t = 100)]
    pub max_sandboxes: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where the control plane keeps its state: `sqlite` (the file sandpit.db in the data dir)
    /// or a PostgreSQL URL, postgres://USER[:PASSWORD]@HOST[:PORT]/DB (a Unix socket:
    /// postgres://USER@/DB?host=/socket/dir). The data key (secrets.key in the data dir)
    /// seals secrets in either.
    #[arg(long, env = "SANDPIT_STORE", value_name = "sqlite|URL", default_value = "sqlite",
          value_parser = sandpit_server::StoreBackend::parse, hide_env_values = true)]
    pub store: sandpit_server::StoreBackend,
    /// Cluster mode: the dir of `sandpit cluster init` (CA and join token). Sandboxes then run
    /// on nodes that joined (`sandpit node --join`), and any number of replicas may share the
    /// PostgreSQL store.
    #[arg(long, value_name = "DIR")]
    pub cluster_dir: Option<PathBuf>,
    #[command(flatten)]
    pub images: ImagesDir,
    /// Parent domain of preview URLs (`{port}-{id}-{hash}-{token}.{domain}`); the default resolves
    /// to loopback with no DNS set-up. A public domain needs wildcard DNS to this server.
    #[arg(long, default_value = "localhost")]
    pub preview_domain: String,
    /// Scheme of preview URLs: http, or https behind a TLS-terminating front proxy.
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    pub preview_scheme: String,
    /// Port in preview URLs (default: the listen port; left out when it is the scheme's
    /// default, e.g. 443 for https).
    #[arg(long)]
    pub preview_port: Option<u16>,
    /// The egress proxy resolves NAME to ADDRESS instead of asking DNS (repeatable).
    #[arg(long, value_name = "NAME=ADDRESS", value_parser = crate::commands::serve::parse_resolve)]
    pub egress_resolve: Vec<(String, std::net::IpAddr)>,
    /// Block this CIDR for every sandbox, whatever its policy, through the egress proxy and
    /// in full mode (repeatable). Loopback, link-local/metadata and this host's addresses are
    /// always blocked; private ranges open only for CIDRs set with the admin key.
    #[arg(long, value_name = "CIDR", value_parser = crate::commands::serve::parse_cidr)]
    pub egress_block: Vec<sandpit_server::egress::IpNet>,
    /// Treat this CIDR as private: only a policy set with the admin key opens it (repeatable;
    /// RFC 1918, CGNAT, unique-local and documentation ranges are private already).
    #[arg(long, value_name = "CIDR", value_parser = crate::commands::serve::parse_cidr)]
    pub egress_private: Vec<sandpit_server::egress::IpNet>,
    /// Grant a private range to every sandbox of a tenant (repeatable). Loopback, link-local
    /// and --egress-block ranges cannot be granted.
    #[arg(long, value_name = "TENANT=CIDR", value_parser = crate::commands::serve::parse_grant)]
    pub egress_grant: Vec<(String, sandpit_server::egress::IpNet)>,
    /// PEM file of CA certificates trusted for upstream TLS of intercepted connections,
    /// besides the host's bundle (repeatable).
    #[arg(long, value_name = "PEM")]
    pub egress_root: Vec<PathBuf>,
    /// Let bucket mounts use this S3 endpoint origin (`http(s)://host:port`, repeatable)
    /// besides https endpoints that resolve to public addresses (the default policy). The
    /// mount's FUSE process connects from this host, so list only endpoints tenants may reach.
    #[arg(long, value_name = "URL")]
    pub mount_endpoint: Vec<String>,
    /// Require the admin key on GET /metrics (default: open, like /healthz).
    #[arg(long)]
    pub metrics_auth: bool,
    /// The cgroup that holds the sandboxes' cgroups, the same path in every hierarchy
    /// (`/sys/fs/cgroup/<controller>/sandpit` on v1, `/sys/fs/cgroup/sandpit` on v2), so a
    /// server restarted from another cgroup finds the old ones; removed at shutdown when
    /// empty. A bare name puts it under the server's own cgroup instead.
    #[arg(long, value_name = "PATH", default_value = sandpit_server::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: String,
    /// Give every sandbox a read-only sysfs at /sys (its own /sys/class/net, the host's CPU and
    /// device tree). Off by default: /sys then holds only /sys/fs/cgroup, and each sandbox
    /// costs the kernel one superblock less, which is what lets a host hold ~10,000 of them.
    #[arg(long)]
    pub sandbox_sysfs: bool,
    /// Refuse to create or start sandboxes (HOST_MEMORY_LOW) while the host's MemAvailable is
    /// below this many MiB (0: no floor).
    #[arg(long, value_name = "MIB", default_value_t = sandpit_server::caps::DEFAULT_MIN_HOST_MEMORY_MB)]
    pub min_host_memory_mb: u64,
    /// Most egress-proxy connections one sandbox keeps open at a time (each pins server fds).
    #[arg(long, value_name = "N", default_value_t = sandpit_server::egress::DEFAULT_MAX_CONNECTIONS_PER_SANDBOX)]
    pub egress_max_connections_per_sandbox: usize,
    /// Most egress-proxy connections all sandboxes of one tenant keep open together.
    #[arg(long, value_name = "N", default_value_t = sandpit_server::egress::DEFAULT_MAX_CONNECTIONS_PER_TENANT)]
    pub egress_max_connections_per_tenant: usize,
    #[command(flatten)]
    pub maxima: MaxFlags,
    #[command(flatten)]
    pub default_quota: DefaultQuotaFlags,
    #[command(flatten)]
    pub object_store: crate::commands::backup::ObjectStoreFlags,
}

/// `serve --max-*`: the largest limits one sandbox may ask for. Unset ones default from the
/// host: its RAM, its CPUs, pid_max / 8, the data dir's filesystem size; a value above what the
/// host has is refused.
#[derive(Debug, Args)]
pub struct MaxFlags {
    /// Largest memory limit of a sandbox (MiB).
    #[arg(long)]
    pub max_memory_mb: Option<u64>,
    /// Largest CPU quota of a sandbox (cores).
    #[arg(long)]
    pub max_cpus: Option<f64>,
    /// Largest process/thread limit of a sandbox.
    #[arg(long)]
    pub max_pids: Option<u64>,
    /// Largest disk limit of a sandbox's writable layer (MiB).
    #[arg(long)]
    pub max_disk_mb: Option<u64>,
    /// Most ports one sandbox may expose at preview URLs.
    #[arg(long, default_value_t = 32)]
    pub max_exposed_ports: u64,
    /// Most background processes running at once in one sandbox.
    #[arg(long, default_value_t = 128)]
    pub max_processes: u64,
    /// Most bucket mounts of one sandbox (each runs an s3fs process on the host); a mount
    /// beyond is refused with TOO_MANY_MOUNTS.
    #[arg(long, default_value_t = sandpit_server::mounts::DEFAULT_MAX_PER_SANDBOX)]
    pub max_mounts_per_sandbox: usize,
}

/// `serve --default-quota-*`: the quota of tenants without one of their own (unset: unlimited).
#[derive(Debug, Args)]
pub struct DefaultQuotaFlags {
    /// Most sandboxes per tenant.
    #[arg(long)]
    pub default_quota_sandboxes: Option<u64>,
    /// Most running sandboxes per tenant.
    #[arg(long)]
    pub default_quota_running: Option<u64>,
    /// Most memory (MiB) of a tenant's running sandboxes together.
    #[arg(long)]
    pub default_quota_memory_mb: Option<u64>,
    /// Most disk (MiB) of a tenant's sandboxes together.
    #[arg(long)]
    pub default_quota_disk_mb: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ImagesDir {
    /// Image directory (default: <data-dir>/images).
    #[arg(long, env = "SANDPIT_IMAGES_DIR", global = true)]
    pub images_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Sandbox id (generated when absent).
    pub id: Option<String>,
    /// Image to run.
    #[arg(long)]
    pub image: Option<String>,
    /// Idle time before the sandbox sleeps: seconds or e.g. 30s, 5m, 1h.
    #[arg(long)]
    pub sleep_after: Option<sandpit_protocol::time::SleepAfter>,
    /// Never put the sandbox to sleep.
    #[arg(long)]
    pub keep_alive: bool,
    /// Whether running background processes keep the sandbox awake (default true; `false`:
    /// it sleeps after the idle time even while they run, which stops them).
    #[arg(long, value_name = "BOOL")]
    pub keep_alive_while_busy: Option<bool>,
    /// Discard the sandbox's files when it sleeps.
    #[arg(long)]
    pub ephemeral: bool,
    /// Isolation tier: `standard` (namespaces on the host kernel, the default) or `gvisor`
    /// (a user-space kernel; the server needs runsc).
    #[arg(long, value_name = "TIER", value_parser = parse_isolation)]
    pub isolation: Option<Isolation>,
    /// Start from this snapshot's files (`sandpit snapshot ls`) instead of a fresh image.
    #[arg(long, value_name = "SNAPSHOT_ID")]
    pub snapshot: Option<String>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// CPU quota in cores (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Disk limit of the writable layer in MiB.
    #[arg(long)]
    pub disk_mb: Option<u64>,
    /// Environment variable for every command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Label (repeatable), to find it with `sandpit ls --label K=V`.
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label_selector)]
    pub labels: Vec<(String, String)>,
    /// Destroy the sandbox this long after now: seconds or e.g. 30m, 2h (0: never).
    #[arg(long)]
    pub ttl: Option<sandpit_protocol::time::Ttl>,
    #[command(flatten)]
    pub network: CreateNetworkFlags,
    /// Print the sandbox as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Sandbox id.
    pub id: String,
    /// Terminal of this session: attach to it (or start it) and leave it running on exit.
    /// Without it, a fresh shell is started and ended with the command.
    #[arg(long)]
    pub session: Option<String>,
    /// Program to run instead of bash (when the terminal is started).
    #[arg(long)]
    pub shell: Option<String>,
    #[command(flatten)]
    pub create: CreateFlag,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only sandboxes with this label (repeatable: all must match).
    #[arg(long = "label", value_name = "K=V", value_parser = parse_label_selector)]
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Sandbox id.
    pub id: String,
    /// File with the code, or `-` to read it from stdin.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Language: python, javascript or typescript (default: from the file extension, else
    /// python).
    #[arg(long, value_name = "LANG", value_parser = parse_language)]
    pub lang: Option<Language>,
    /// Run in this existing context (its variables persist between runs). Without it a fresh
    /// context is created for the run and deleted afterwards.
    #[arg(long, value_name = "C")]
    pub context: Option<String>,
    /// Keep the fresh context and print its id on stderr (to pass to --context later).
    #[arg(long, conflicts_with = "context")]
    pub keep_context: bool,
    /// Working directory of the fresh context.
    #[arg(long, conflicts_with = "context")]
    pub cwd: Option<String>,
    /// Environment variable of the fresh context (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env, conflicts_with = "context")]
    pub env: Vec<(String, String)>,
    /// Interrupt the run after this many milliseconds (an error; a context that ignores the
    /// interrupt is restarted).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Directory for image and HTML results.
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
    #[command(flatten)]
    pub create: CreateFlag,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// A local path, `ID:PATH` in a sandbox, or `-` (stdin).
    pub src: String,
    /// A local path, `ID:PATH` in a sandbox, or `-` (stdout). An existing directory receives
    /// SRC under its own name.
    pub dst: String,
    /// Copy directories with their contents (streamed as one tar archive).
    #[arg(short, long)]
    pub recursive: bool,
    #[command(flatten)]
    pub create: CreateFlag,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox id.
    pub id: String,
    /// Session to run in: its shell keeps cwd, variables and functions between commands.
    /// Without it every command runs in a fresh `bash -c`.
    #[arg(long)]
    pub session: Option<String>,
    /// Working directory for this command.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variable for this command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Kill the command after this many milliseconds (exit code 124, message on stderr);
    /// 0: no timeout, even if the session or sandbox has a default.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Do not send the local stdin (by default it is sent when it is not a terminal).
    #[arg(long, short = 'n')]
    pub no_stdin: bool,
    /// The command: every word after the id, hyphens included (`sandpit exec ID ls -la`), so
    /// options of `exec` go before the command's first word; `--` before it is optional. Several words are
    /// shell-quoted and joined; a single word is passed to the shell as is (so
    /// `sandpit exec ID 'ls | wc -l'` runs a pipeline).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(flatten)]
    pub images: ImagesDir,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the default image (Debian bookworm with Python and Node) if it is missing or of an
    /// older recipe; a new version is swapped in at the same path (running sandboxes keep the
    /// old one until they stop).
    Build {
        /// Rebuild even if it is current (for package updates of the mirror).
        #[arg(long)]
        force: bool,
    },
    /// Import an OCI-layout or `docker save` tarball.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List images.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image.
    Rm { name: String },
}

fn parse_language(s: &str) -> Result<Language, String> {
    s.parse()
        .map_err(|e: sandpit_client::ClientError| e.to_string())
}

/// Parses `K=V` (`V` may be empty or contain `=`).
pub(crate) fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

/// `--isolation standard|gvisor`.
fn parse_isolation(s: &str) -> Result<Isolation, String> {
    Isolation::parse(s).ok_or_else(|| {
        let tiers: Vec<&str> = Isolation::ALL.iter().map(|t| t.as_str()).collect();
        format!("{s:?}: expected one of {}", tiers.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=1=2"), Ok(("A".into(), "1=2".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=1").is_err());
        assert!(parse_env("A").is_err());
    }

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
        hide_inherited_globals(Cli::command()).debug_assert();
    }

    fn parse_from(argv: &[&str]) -> Cli {
        let matches = hide_inherited_globals(Cli::command()).get_matches_from(argv);
        Cli::from_arg_matches(&matches).unwrap()
    }

    #[test]
    fn global_options_work_anywhere_but_show_once() {
        let before = parse_from(&["sandpit", "--url", "http://h:1", "ls"]);
        let after = parse_from(&["sandpit", "ls", "--url", "http://h:1", "--key", "k"]);
        assert_eq!((before.url.as_str(), before.key), ("http://h:1", None));
        assert_eq!(
            (after.url.as_str(), after.key.as_deref()),
            ("http://h:1", Some("k"))
        );
        let deep = parse_from(&["sandpit", "ctx", "ls", "box", "--data-dir", "/d"]);
        assert_eq!(deep.data_dir, PathBuf::from("/d"));
        assert_eq!(parse_from(&["sandpit", "ls"]).url, "http://127.0.0.1:7070");

        let mut command = hide_inherited_globals(Cli::command());
        let top = command.render_long_help().to_string();
        assert!(top.contains("--url") && top.contains("--data-dir"), "{top}");
        let ls = command
            .find_subcommand_mut("ls")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!ls.contains("--url") && !ls.contains("--key"), "{ls}");
        assert!(ls.contains("--json"), "{ls}");
    }

    #[test]
    fn images_dir_goes_before_or_after_the_image_subcommand() {
        for argv in [
            ["sandpit", "image", "build", "--images-dir", "/x"],
            ["sandpit", "image", "--images-dir", "/x", "build"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Image(args) = cli.command else {
                panic!("not image")
            };
            assert_eq!(args.images.images_dir, Some(PathBuf::from("/x")));
            assert!(matches!(args.command, ImageCommand::Build { force: false }));
        }
    }

    fn exec_of(argv: &[&str]) -> ExecArgs {
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Exec(args),
                ..
            }) => args,
            other => panic!("{argv:?} is not an exec: {other:?}"),
        }
    }

    #[test]
    fn exec_takes_the_command_with_or_without_double_dash() {
        for argv in [
            &["sandpit", "exec", "demo", "ls", "-la"][..],
            &["sandpit", "exec", "demo", "--", "ls", "-la"],
        ] {
            let args = exec_of(argv);
            assert_eq!(args.id, "demo");
            assert_eq!(args.command, ["ls", "-la"]);
        }
        let args = exec_of(&[
            "sandpit",
            "exec",
            "--session",
            "s",
            "-n",
            "demo",
            "ls",
            "-la",
        ]);
        assert_eq!(args.session.as_deref(), Some("s"));
        assert!(args.no_stdin);
        assert_eq!(args.command, ["ls", "-la"]);
        // After the id every word is the command's, even one spelt like an exec option.
        let args = exec_of(&[
            "sandpit",
            "exec",
            "demo",
            "grep",
            "--session",
            "x",
            "--url",
            "u",
        ]);
        assert_eq!(args.session, None);
        assert_eq!(args.command, ["grep", "--session", "x", "--url", "u"]);
        // A single quoted word stays one word: the shell line.
        assert_eq!(
            exec_of(&["sandpit", "exec", "demo", "ls | wc -l"]).command,
            ["ls | wc -l"]
        );
        assert!(Cli::try_parse_from(["sandpit", "exec", "demo"]).is_err());
        assert!(Cli::try_parse_from(["sandpit", "exec", "demo", "--"]).is_err());
    }

    #[test]
    fn start_takes_the_command_with_or_without_double_dash() {
        for argv in [
            &["sandpit", "start", "--id", "p1", "demo", "sleep", "-v"][..],
            &[
                "sandpit", "start", "--id", "p1", "demo", "--", "sleep", "-v",
            ],
        ] {
            let Command::Start(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not start")
            };
            assert_eq!(args.process_id.as_deref(), Some("p1"));
            assert_eq!(args.id, "demo");
            assert_eq!(args.command, ["sleep", "-v"]);
        }
    }

    /// Splits an example line as a POSIX shell would, for the quoting the examples use
    /// (spaces and single quotes).
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let (mut word, mut in_word, mut quoted) = (String::new(), false, false);
        for c in line.chars() {
            match c {
                '\'' => (quoted, in_word) = (!quoted, true),
                ' ' if !quoted => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                }
                _ => (word, in_word) = (word + &c.to_string(), true),
            }
        }
        assert!(!quoted, "unbalanced quote in {line:?}");
        if in_word {
            words.push(word);
        }
        words
    }

    #[test]
    fn help_examples_parse() {
        let mut command = hide_inherited_globals(Cli::command());
        let top = command.render_long_help().to_string();
        let mut sub_help = |name: &str| {
            command
                .find_subcommand_mut(name)
                .unwrap()
                .render_long_help()
                .to_string()
        };
        let (exec, cp) = (sub_help("exec"), sub_help("cp"));
        let examples: Vec<Vec<String>> = [top, exec, cp]
            .iter()
            .flat_map(|help| help.lines())
            .map(str::trim)
            .filter(|line| line.starts_with("sandpit "))
            .map(shell_words)
            .collect();
        assert!(examples.len() >= 11, "{examples:?}");
        for argv in &examples {
            let matches = hide_inherited_globals(Cli::command())
                .try_get_matches_from(argv)
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            Cli::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        }
        let pipeline = examples
            .iter()
            .find(|a| a.contains(&"ls / | wc -l".to_owned()));
        assert!(
            pipeline.is_some(),
            "the shell-line example lost its quoting"
        );
    }

    #[test]
    fn kill_takes_a_process_or_all() {
        assert!(Cli::try_parse_from(["sandpit", "kill", "box"]).is_err());
        assert!(Cli::try_parse_from(["sandpit", "kill", "box", "p", "--all"]).is_err());
        let cli = Cli::try_parse_from(["sandpit", "kill", "box", "--all"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Kill(KillArgs { all: true, .. })
        ));
        let cli =
            Cli::try_parse_from(["sandpit", "start", "box", "--id", "p1", "--", "sleep", "1"])
                .unwrap();
        let Command::Start(args) = cli.command else {
            panic!("not start")
        };
        assert_eq!(
            (args.id.as_str(), args.process_id.as_deref()),
            ("box", Some("p1"))
        );
    }

    #[test]
    fn git_clone_url_is_not_the_server_url() {
        let cli = Cli::try_parse_from(["sandpit", "git", "clone", "box", "file:///r"]).unwrap();
        assert_eq!(cli.url, "http://127.0.0.1:7070");
        let Command::Git {
            command: GitCommand::Clone { repo, .. },
        } = cli.command
        else {
            panic!("not git clone")
        };
        assert_eq!(repo, "file:///r");
    }

    #[test]
    fn exec_takes_everything_after_the_separator() {
        let cli = Cli::try_parse_from([
            "sandpit", "exec", "demo", "--env", "A=1", "--", "ls", "-la", "--env",
        ])
        .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.command, ["ls", "-la", "--env"]);
        assert_eq!(args.env, [("A".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn quota_shows_a_tenant_or_sets_one() {
        use crate::commands::quota::QuotaCommand;
        let cli = Cli::try_parse_from(["sandpit", "quota"]).unwrap();
        let Command::Quota(args) = cli.command else {
            panic!("not quota")
        };
        assert!(args.tenant.is_none() && args.command.is_none());
        let cli = Cli::try_parse_from(["sandpit", "quota", "acme", "--json"]).unwrap();
        let Command::Quota(args) = cli.command else {
            panic!("not quota")
        };
        assert_eq!(args.tenant.as_deref(), Some("acme"));
        let cli = Cli::try_parse_from([
            "sandpit",
            "quota",
            "set",
            "acme",
            "--sandboxes",
            "5",
            "--memory-mb",
            "4096",
        ])
        .unwrap();
        let Command::Quota(args) = cli.command else {
            panic!("not quota")
        };
        let Some(QuotaCommand::Set { tenant, quota }) = args.command else {
            panic!("not quota set")
        };
        assert_eq!(tenant, "acme");
        assert_eq!(quota.quota().sandboxes, Some(5));
        assert_eq!(quota.quota().memory_mb, Some(4096));
        assert_eq!(quota.quota().running_sandboxes, None);
        let cli = Cli::try_parse_from(["sandpit", "serve", "--max-memory-mb", "512"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.maxima.max_memory_mb, Some(512));
        assert_eq!(args.maxima.max_exposed_ports, 32);
    }
}
