//! Last steps before the sandbox's init runs: rlimits, capabilities, no_new_privs, seccomp.

use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::launch::LaunchError;

/// Capabilities sandbox root keeps (Docker's default set). They only act inside the sandbox's
/// user namespace; every other capability is also removed from the bounding set, so no exec
/// can regain it.
pub const KEPT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_RAW,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_MKNOD,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_SETFCAP,
];

fn caps_err(stage: &'static str) -> impl FnOnce(caps::errors::CapsError) -> LaunchError {
    move |source| LaunchError::Caps { stage, source }
}

/// RLIMIT_CORE = 0 and RLIMIT_NOFILE = min(nofile, current hard limit) (hard limits can only be
/// lowered without CAP_SYS_RESOURCE in the initial namespace).
pub(crate) fn set_rlimits(nofile: u64) -> Result<(), LaunchError> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(LaunchError::sys("setrlimit core"))?;
    let (_, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(LaunchError::sys("getrlimit nofile"))?;
    let n = nofile.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(LaunchError::sys("setrlimit nofile"))
}

/// Reduces the bounding, ambient, inheritable, permitted and effective sets to
/// [`KEPT_CAPABILITIES`].
pub(crate) fn drop_capabilities() -> Result<(), LaunchError> {
    let keep: CapsHashSet = KEPT_CAPABILITIES.iter().copied().collect();
    let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read bounding set"))?;
    for cap in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(caps_err("drop bounding capability"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient capabilities"))?;
    let effective = caps::read(None, CapSet::Effective).map_err(caps_err("read effective set"))?;
    let keep_now: CapsHashSet = effective.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &keep_now).map_err(caps_err("set inheritable"))?;
    caps::set(None, CapSet::Effective, &keep_now).map_err(caps_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &keep_now).map_err(caps_err("set permitted"))?;
    Ok(())
}

/// rlimits, capabilities, no_new_privs, then the seccomp filter (which blocks the syscalls the
/// earlier steps needed, so it comes last).
pub(crate) fn harden(nofile: u64) -> Result<(), LaunchError> {
    set_rlimits(nofile)?;
    drop_capabilities()?;
    nix::sys::prctl::set_no_new_privs().map_err(LaunchError::sys("PR_SET_NO_NEW_PRIVS"))?;
    Ok(crate::seccomp::apply()?)
}
