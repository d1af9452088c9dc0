//! The sandbox's seccomp profile, modelled on Docker's default profile but written as a deny list
//! (default action: allow).
//!
//! Two filters are installed: one returning `EPERM` for [`DENIED_SYSCALLS`], for `clone` with any
//! `CLONE_NEW*` flag and for unusual `personality` values; one returning `ENOSYS` for `clone3`
//! (whose flags live in memory, out of BPF's reach), so libc falls back to `clone`. The filters
//! only accept the native architecture: a syscall made through the 32-bit `int 0x80` entry
//! kills the process. (The kernel here has no x32 ABI, whose syscall numbers would bypass the
//! list; `CONFIG_X86_X32_ABI` is off on Debian kernels.)

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// One syscall the sandbox may not make, and why.
#[derive(Debug, Clone, Copy)]
pub struct DeniedSyscall {
    pub name: &'static str,
    pub nr: i64,
    pub why: &'static str,
}

/// `deny![SYS_x => "why", ...]`: the table, named after the libc constants.
macro_rules! deny {
    ($($sys:ident => $why:literal),* $(,)?) => {
        &[$(DeniedSyscall { name: stringify!($sys), nr: libc::$sys, why: $why }),*]
    };
}

/// Syscalls that fail with `EPERM` inside a sandbox.
pub const DENIED_SYSCALLS: &[DeniedSyscall] = deny![
    SYS_keyctl => "the kernel keyring is not namespaced",
    SYS_add_key => "the kernel keyring is not namespaced",
    SYS_request_key => "the kernel keyring is not namespaced",
    SYS_bpf => "eBPF programs reach kernel memory and other namespaces",
    SYS_perf_event_open => "performance counters leak host information and have a bug history",
    SYS_kexec_load => "loads a new kernel",
    SYS_kexec_file_load => "loads a new kernel",
    SYS_init_module => "loads kernel modules",
    SYS_finit_module => "loads kernel modules",
    SYS_delete_module => "unloads kernel modules",
    SYS_userfaultfd => "a common building block of kernel exploits",
    SYS_io_uring_setup => "large kernel attack surface, bypasses seccomp for the ops it runs",
    SYS_io_uring_enter => "large kernel attack surface, bypasses seccomp for the ops it runs",
    SYS_io_uring_register => "large kernel attack surface, bypasses seccomp for the ops it runs",
    SYS_reboot => "restarts the machine (or the pid namespace)",
    SYS_swapon => "host swap configuration",
    SYS_swapoff => "host swap configuration",
    SYS_acct => "host process accounting",
    SYS_quotactl => "host disk quotas",
    SYS_quotactl_fd => "host disk quotas",
    SYS_syslog => "the kernel log is not namespaced",
    SYS_settimeofday => "the clock is not namespaced",
    SYS_clock_settime => "the clock is not namespaced",
    SYS_clock_adjtime => "the clock is not namespaced",
    SYS_adjtimex => "the clock is not namespaced",
    SYS_iopl => "raw I/O port access",
    SYS_ioperm => "raw I/O port access",
    SYS_open_by_handle_at => "opens files by handle, bypassing path-based confinement",
    SYS_name_to_handle_at => "companion of open_by_handle_at",
    SYS_lookup_dcookie => "kernel profiling interface",
    SYS_mount => "the sandbox's mount table is fixed at start",
    SYS_umount2 => "unmounting could reveal what a mask hides",
    SYS_pivot_root => "the sandbox's root is fixed at start",
    SYS_unshare => "nested namespaces widen the kernel attack surface",
    SYS_setns => "nested namespaces widen the kernel attack surface",
    SYS_fsopen => "new mount API",
    SYS_fsconfig => "new mount API",
    SYS_fsmount => "new mount API",
    SYS_fspick => "new mount API",
    SYS_open_tree => "new mount API",
    SYS_move_mount => "new mount API",
    SYS_mount_setattr => "new mount API",
    SYS_fanotify_init => "filesystem-wide event monitoring",
    SYS_vhangup => "terminal hangup of the host's consoles",
    SYS_uselib => "obsolete",
    SYS_ustat => "obsolete",
    SYS_sysfs => "obsolete",
    SYS__sysctl => "obsolete",
    SYS_nfsservctl => "obsolete",
];

/// Namespace flags `clone` may not carry (`CLONE_NEWTIME` shares its bit with the exit signal
/// in `clone`, and is only honoured by `clone3`/`unshare`, both blocked).
pub const DENIED_CLONE_FLAGS: &[(&str, libc::c_int)] = &[
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
];

/// `personality` values that stay allowed (Docker's list): Linux, `UNAME26`, `PER_LINUX32`,
/// `PER_LINUX32|UNAME26` and the query value.
pub const ALLOWED_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

/// Errors building or installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
    #[error("seccomp profile is only defined for x86_64")]
    UnsupportedArch,
}

fn cond(
    index: u8,
    len: SeccompCmpArgLen,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(index, len, op, value)?)
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

/// Compiles the two BPF programs (EPERM filter, then the clone3 ENOSYS filter).
pub fn build() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|d| (d.nr, Vec::new())).collect();
    let clone_rules = DENIED_CLONE_FLAGS
        .iter()
        .map(|(_, flag)| {
            let flag = *flag as u64;
            SeccompRule::new(vec![cond(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])
            .map_err(SeccompError::from)
        })
        .collect::<Result<Vec<_>, _>>()?;
    eperm.insert(libc::SYS_clone, clone_rules);
    let personality = ALLOWED_PERSONALITIES
        .iter()
        .map(|p| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *p))
        .collect::<Result<Vec<_>, _>>()?;
    eperm.insert(libc::SYS_personality, vec![SeccompRule::new(personality)?]);
    let eperm = SeccompFilter::new(
        eperm,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let enosys = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(vec![eperm.try_into()?, enosys.try_into()?])
}

/// Installs the profile on the calling thread (and the threads and processes it creates later).
/// Requires `no_new_privs` (or CAP_SYS_ADMIN).
pub fn apply() -> Result<(), SeccompError> {
    for prog in build()? {
        seccompiler::apply_filter(&prog)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_unique_numbers_and_reasons() {
        let mut nrs: Vec<_> = DENIED_SYSCALLS.iter().map(|d| d.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), DENIED_SYSCALLS.len());
        assert!(DENIED_SYSCALLS.iter().all(|d| !d.why.is_empty()));
        for name in [
            "SYS_keyctl",
            "SYS_bpf",
            "SYS_io_uring_setup",
            "SYS_userfaultfd",
            "SYS_mount",
        ] {
            assert!(
                DENIED_SYSCALLS.iter().any(|d| d.name == name),
                "{name} missing"
            );
        }
        // ptrace stays allowed, as in Docker's default profile.
        assert!(!DENIED_SYSCALLS.iter().any(|d| d.nr == libc::SYS_ptrace));
    }

    #[test]
    fn filters_compile() {
        let progs = build().unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    /// Installs the filter in a forked child and checks what it allows and denies there.
    #[test]
    #[allow(unsafe_code)]
    fn filter_denies_in_a_child() {
        // Built before the fork: the child of a multi-threaded test process must not allocate.
        let progs = build().unwrap();
        // SAFETY: the child only makes raw syscalls (seccompiler's apply_filter does not
        // allocate) and leaves with `_exit`; it never returns into the test harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                let mut code = 0;
                if nix::sys::prctl::set_no_new_privs().is_err()
                    || progs.iter().any(|p| seccompiler::apply_filter(p).is_err())
                {
                    crate::sys::exit_immediately(10);
                }
                // SAFETY: raw syscalls with integer arguments only.
                if unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) } != -1
                    || errno() != libc::EPERM
                {
                    code |= 1;
                }
                // SAFETY: as above.
                if unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUTS) } != -1
                    || errno() != libc::EPERM
                {
                    code |= 2;
                }
                // SAFETY: as above.
                if unsafe { libc::syscall(libc::SYS_clone3, 0, 0) } != -1 || errno() != libc::ENOSYS
                {
                    code |= 4;
                }
                // SAFETY: as above.
                if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
                    code |= 8;
                }
                crate::sys::exit_immediately(code)
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
