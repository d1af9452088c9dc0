//! The OCI bundle (`config.json`) a gVisor sandbox runs from: the host overlay as a writable
//! root, the static agent bound read-only, a host directory for the agent's socket and the
//! sandbox's run dir (the egress socket) at `/run/sandpit`. Pure, so it is unit-tested.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

/// Where the agent binary appears inside the sandbox.
pub const AGENT_PATH: &str = "/.sandpit/agent";
/// Directory inside the sandbox, bound to a host directory, in which the agent binds its socket.
/// runsc's `--host-uds=create` makes that a real host socket the driver connects to.
pub const AGENT_SOCKET_DIR: &str = "/.sandpit/sock";
/// File name of the agent's socket in [`AGENT_SOCKET_DIR`] (and in its host directory).
pub const AGENT_SOCKET: &str = "agent.sock";

/// What goes into one sandbox's bundle.
#[derive(Debug, Clone)]
pub struct BundleParams<'a> {
    pub hostname: &'a str,
    /// Host path of the sandbox's root (the overlay's mount point).
    pub rootfs: &'a Path,
    pub agent_bin: &'a Path,
    /// Host directory shown at [`AGENT_SOCKET_DIR`].
    pub agent_socket_dir: &'a Path,
    /// Host directory shown read-only at `/run/sandpit`.
    pub run_dir: &'a Path,
    pub env: &'a [(String, String)],
    pub nofile: u64,
    /// The agent's tracing filter (never taken from the sandbox's env).
    pub log_filter: Option<&'a str>,
}

/// Capabilities of the sandbox's root inside gVisor (Docker's default set): they act on the
/// gVisor kernel only, never on the host.
const CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::SysChroot,
    Capability::Mknod,
    Capability::AuditWrite,
    Capability::Setfcap,
];

fn bind(source: &Path, destination: &str, read_only: bool) -> Result<Mount, OciSpecError> {
    let mode = if read_only { "ro" } else { "rw" };
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec![
            "rbind".to_string(),
            mode.to_string(),
            "nosuid".to_string(),
            "nodev".to_string(),
        ])
        .build()
}

/// The agent's command line: serve on the socket in [`AGENT_SOCKET_DIR`] and run the egress
/// bridge (the sandbox's only way to the egress proxy).
pub fn agent_args(log_filter: Option<&str>) -> Vec<String> {
    let mut args = vec![
        AGENT_PATH.to_string(),
        "serve".to_string(),
        "--socket".to_string(),
        format!("{AGENT_SOCKET_DIR}/{AGENT_SOCKET}"),
        "--egress-bridge".to_string(),
    ];
    if let Some(filter) = log_filter {
        args.extend(["--log-filter".to_string(), filter.to_string()]);
    }
    args
}

/// The bundle's `config.json`.
pub fn spec(p: &BundleParams<'_>) -> Result<Spec, OciSpecError> {
    let caps: HashSet<Capability> = CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(agent_args(p.log_filter))
        .env(
            p.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(sandpit_isolation::launch::WORKSPACE)
        .no_new_privileges(true)
        .capabilities(capabilities)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(p.nofile)
                .hard(p.nofile)
                .build()?,
        ])
        .build()?;
    let mut mounts = oci_spec::runtime::get_default_mounts();
    // gVisor's own cgroupfs would show its internal view, not the sandbox's limits: leave it out.
    mounts.retain(|m| m.destination() != Path::new("/sys/fs/cgroup"));
    mounts.push(bind(p.agent_bin, AGENT_PATH, true)?);
    mounts.push(bind(p.agent_socket_dir, AGENT_SOCKET_DIR, false)?);
    mounts.push(bind(p.run_dir, sandpit_isolation::launch::RUN_DIR, true)?);
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let mut linux = LinuxBuilder::default().namespaces(namespaces).build()?;
    // Limits are the driver's cgroups (runsc runs with --ignore-cgroups).
    linux.set_resources(None);
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(PathBuf::from(p.rootfs))
                .readonly(false)
                .build()?,
        )
        .hostname(p.hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(env: &'a [(String, String)]) -> BundleParams<'a> {
        BundleParams {
            hostname: "sb-1",
            rootfs: Path::new("/data/gvisor/sandboxes/sb-1/rootfs"),
            agent_bin: Path::new("/opt/sandpit-agent"),
            agent_socket_dir: Path::new("/data/gvisor/sandboxes/sb-1/sock"),
            run_dir: Path::new("/data/gvisor/sandboxes/sb-1/run"),
            env,
            nofile: 4096,
            log_filter: Some("info"),
        }
    }

    #[test]
    fn root_is_the_writable_overlay_and_the_agent_serves_on_the_socket_dir() {
        let env = vec![("A".to_string(), "1".to_string())];
        let spec = spec(&params(&env)).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/data/gvisor/sandboxes/sb-1/rootfs"));
        assert_eq!(root.readonly(), Some(false));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process.args().as_deref().unwrap(),
            [
                "/.sandpit/agent",
                "serve",
                "--socket",
                "/.sandpit/sock/agent.sock",
                "--egress-bridge",
                "--log-filter",
                "info"
            ]
        );
        assert_eq!(process.env().as_deref().unwrap(), ["A=1"]);
        assert_eq!(process.cwd(), Path::new("/workspace"));
        assert_eq!(spec.hostname().as_deref(), Some("sb-1"));
    }

    #[test]
    fn host_paths_are_bound_with_the_right_modes() {
        let spec = spec(&params(&[])).unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        let find = |dest: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(dest))
                .unwrap_or_else(|| panic!("no mount at {dest}"))
        };
        for (dest, source, mode) in [
            ("/.sandpit/agent", "/opt/sandpit-agent", "ro"),
            ("/.sandpit/sock", "/data/gvisor/sandboxes/sb-1/sock", "rw"),
            ("/run/sandpit", "/data/gvisor/sandboxes/sb-1/run", "ro"),
        ] {
            let m = find(dest);
            assert_eq!(m.typ().as_deref(), Some("bind"));
            assert_eq!(m.source().as_deref(), Some(Path::new(source)));
            let options = m.options().as_deref().unwrap();
            assert!(options.iter().any(|o| o == mode), "{dest}: {options:?}");
            assert!(options.iter().any(|o| o == "nosuid"), "{dest}: {options:?}");
        }
        assert!(
            !mounts
                .iter()
                .any(|m| m.destination() == Path::new("/sys/fs/cgroup"))
        );
        let json = serde_json::to_value(&spec).unwrap();
        assert!(
            json["linux"].get("resources").is_none(),
            "cgroups are the driver's"
        );
    }
}
