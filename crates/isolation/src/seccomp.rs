//! The sandbox's seccomp profile: an allow-list modelled on Docker's default profile.
//!
//! [`SYSCALLS`] is the one table: every syscall the profile names, in groups, each group with a
//! [`Verdict`] and the reason for it. A syscall the table does not name — including every
//! syscall added to the kernel after the table was written — fails with `ENOSYS`, which libc and
//! language runtimes treat as "this kernel is too old" and fall back from.
//!
//! Three filters are installed (the kernel runs them all and the strictest answer wins):
//!
//! 1. the allow-list: [`Verdict::Allow`] and [`Verdict::Eperm`] syscalls pass, everything else
//!    gets `ENOSYS`;
//! 2. `EPERM` for the [`Verdict::Eperm`] syscalls, for `clone` with any [`DENIED_CLONE_FLAGS`]
//!    and for `personality` values outside [`ALLOWED_PERSONALITIES`];
//! 3. `EAFNOSUPPORT` for `socket` outside [`ALLOWED_SOCKET_FAMILIES`] (netlink only with
//!    [`ALLOWED_NETLINK_PROTOCOLS`]) and `socketpair` outside `AF_UNIX`.
//!
//! The filters only accept the native architecture: a syscall made through the 32-bit
//! `int 0x80` entry kills the process. x32 syscall numbers (bit 30 set) are named nowhere, so
//! they get `ENOSYS` even on a kernel built with the x32 ABI.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What a sandbox gets when it makes a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The syscall runs (for `clone`, `personality`, `socket`, `socketpair` only with the
    /// arguments the other filters let through).
    Allow,
    /// Fails with `EPERM`: a dangerous interface, refused explicitly.
    Eperm,
    /// Fails with `ENOSYS`, like a syscall the table does not name, so that libc falls back.
    Enosys,
}

/// One syscall: its libc name and number on this architecture.
#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    pub name: &'static str,
    pub nr: i64,
}

/// Syscalls that share a verdict and the reason for it.
#[derive(Debug, Clone, Copy)]
pub struct SyscallGroup {
    pub verdict: Verdict,
    pub why: &'static str,
    pub syscalls: &'static [Syscall],
}

/// `group!(Verdict, "why", [SYS_x, ...])`: one row of the table, named after the libc constants.
macro_rules! group {
    ($verdict:ident, $why:literal, [$($sys:ident),* $(,)?]) => {
        SyscallGroup {
            verdict: Verdict::$verdict,
            why: $why,
            syscalls: &[$(Syscall { name: stringify!($sys), nr: libc::$sys }),*],
        }
    };
}

/// Every syscall the profile names (x86_64 numbering). Anything else fails with `ENOSYS`.
#[rustfmt::skip] // one group per row, several syscalls per line
pub const SYSCALLS: &[SyscallGroup] = &[
    group!(
        Allow,
        "files and directories: confined by the sandbox's mount namespace and permissions",
        [
            SYS_read, SYS_write, SYS_open, SYS_openat, SYS_openat2, SYS_creat, SYS_close,
            SYS_close_range, SYS_lseek, SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev,
            SYS_preadv, SYS_pwritev, SYS_preadv2, SYS_pwritev2, SYS_stat, SYS_fstat, SYS_lstat,
            SYS_newfstatat, SYS_statx, SYS_statfs, SYS_fstatfs, SYS_access, SYS_faccessat,
            SYS_faccessat2, SYS_getdents, SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_fchdir,
            SYS_mkdir, SYS_mkdirat, SYS_rmdir, SYS_rename, SYS_renameat, SYS_renameat2, SYS_link,
            SYS_linkat, SYS_unlink, SYS_unlinkat, SYS_symlink, SYS_symlinkat, SYS_readlink,
            SYS_readlinkat, SYS_chmod, SYS_fchmod, SYS_fchmodat, SYS_fchmodat2, SYS_chown,
            SYS_fchown, SYS_lchown, SYS_fchownat, SYS_umask, SYS_utime, SYS_utimes,
            SYS_futimesat, SYS_utimensat, SYS_truncate, SYS_ftruncate, SYS_fallocate,
            SYS_fadvise64, SYS_readahead, SYS_fsync, SYS_fdatasync, SYS_sync, SYS_syncfs,
            SYS_sync_file_range, SYS_flock, SYS_sendfile, SYS_copy_file_range, SYS_splice,
            SYS_tee, SYS_vmsplice, SYS_mknod, SYS_mknodat, SYS_chroot, SYS_setxattr,
            SYS_lsetxattr, SYS_fsetxattr, SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr,
            SYS_listxattr, SYS_llistxattr, SYS_flistxattr, SYS_removexattr, SYS_lremovexattr,
            SYS_fremovexattr,
        ]
    ),
    group!(
        Allow,
        "descriptors, pipes, event loops, PTYs and file watches (tokio, libuv, asyncio, inotify)",
        [
            SYS_dup, SYS_dup2, SYS_dup3, SYS_fcntl, SYS_ioctl, SYS_pipe, SYS_pipe2, SYS_poll,
            SYS_ppoll, SYS_select, SYS_pselect6, SYS_epoll_create, SYS_epoll_create1,
            SYS_epoll_ctl, SYS_epoll_wait, SYS_epoll_pwait, SYS_epoll_pwait2, SYS_eventfd,
            SYS_eventfd2, SYS_signalfd, SYS_signalfd4, SYS_timerfd_create, SYS_timerfd_settime,
            SYS_timerfd_gettime, SYS_inotify_init, SYS_inotify_init1, SYS_inotify_add_watch,
            SYS_inotify_rm_watch, SYS_memfd_create, SYS_io_setup, SYS_io_destroy,
            SYS_io_getevents, SYS_io_submit, SYS_io_cancel,
        ]
    ),
    group!(
        Allow,
        "memory of the calling process",
        [
            SYS_brk, SYS_mmap, SYS_mprotect, SYS_munmap, SYS_mremap, SYS_msync, SYS_mincore,
            SYS_madvise, SYS_mlock, SYS_mlock2, SYS_munlock, SYS_mlockall, SYS_munlockall,
            SYS_remap_file_pages, SYS_membarrier, SYS_pkey_mprotect, SYS_pkey_alloc,
            SYS_pkey_free, SYS_mbind, SYS_get_mempolicy, SYS_set_mempolicy, SYS_mseal,
        ]
    ),
    group!(
        Allow,
        "processes and threads, inside the sandbox's pid namespace and cgroup (clone's flags \
         and personality's value are checked by the EPERM filter)",
        [
            SYS_clone, SYS_fork, SYS_vfork, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group,
            SYS_wait4, SYS_waitid, SYS_kill, SYS_tkill, SYS_tgkill, SYS_getpid, SYS_getppid,
            SYS_gettid, SYS_set_tid_address, SYS_set_robust_list, SYS_get_robust_list,
            SYS_futex, SYS_futex_waitv, SYS_rseq, SYS_arch_prctl, SYS_prctl,
            SYS_set_thread_area, SYS_get_thread_area, SYS_modify_ldt, SYS_personality,
            SYS_setpgid, SYS_getpgid, SYS_getpgrp, SYS_setsid, SYS_getsid, SYS_pidfd_open,
            SYS_pidfd_send_signal, SYS_pidfd_getfd, SYS_getrusage, SYS_getrlimit, SYS_setrlimit,
            SYS_prlimit64, SYS_times, SYS_sched_yield, SYS_sched_setaffinity,
            SYS_sched_getaffinity, SYS_sched_setparam, SYS_sched_getparam,
            SYS_sched_setscheduler, SYS_sched_getscheduler, SYS_sched_get_priority_max,
            SYS_sched_get_priority_min, SYS_sched_rr_get_interval, SYS_sched_setattr,
            SYS_sched_getattr, SYS_getpriority, SYS_setpriority, SYS_ioprio_get, SYS_ioprio_set,
            SYS_capget, SYS_capset, SYS_seccomp, SYS_landlock_create_ruleset,
            SYS_landlock_add_rule, SYS_landlock_restrict_self, SYS_restart_syscall,
        ]
    ),
    group!(
        Allow,
        "debugging the sandbox's own processes (as in Docker): the pid namespace and the \
         missing CAP_SYS_PTRACE limit the targets, and the agent is not dumpable",
        [
            SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp,
            SYS_process_madvise, SYS_process_mrelease,
        ]
    ),
    group!(
        Allow,
        "user and group ids, mapped by the sandbox's user namespace",
        [
            SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid, SYS_getresuid, SYS_getresgid,
            SYS_setuid, SYS_setgid, SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid,
            SYS_setfsuid, SYS_setfsgid, SYS_getgroups, SYS_setgroups,
        ]
    ),
    group!(
        Allow,
        "signals and interval timers",
        [
            SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_rt_sigpending,
            SYS_rt_sigtimedwait, SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_rt_sigsuspend,
            SYS_sigaltstack, SYS_pause, SYS_alarm, SYS_getitimer, SYS_setitimer,
        ]
    ),
    group!(
        Allow,
        "reading clocks, sleeping, POSIX timers",
        [
            SYS_clock_gettime, SYS_clock_getres, SYS_clock_nanosleep, SYS_nanosleep,
            SYS_gettimeofday, SYS_time, SYS_timer_create, SYS_timer_settime, SYS_timer_gettime,
            SYS_timer_getoverrun, SYS_timer_delete,
        ]
    ),
    group!(
        Allow,
        "system information: the UTS namespace is the sandbox's own, the rest is read-only",
        [
            SYS_uname, SYS_sethostname, SYS_setdomainname, SYS_sysinfo, SYS_getcpu,
            SYS_getrandom,
        ]
    ),
    group!(
        Allow,
        "sockets in the sandbox's network namespace (socket and socketpair families are \
         checked by the EAFNOSUPPORT filter)",
        [
            SYS_socket, SYS_socketpair, SYS_connect, SYS_accept, SYS_accept4, SYS_bind,
            SYS_listen, SYS_shutdown, SYS_getsockname, SYS_getpeername, SYS_setsockopt,
            SYS_getsockopt, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg,
            SYS_recvmmsg,
        ]
    ),
    group!(
        Allow,
        "System V and POSIX IPC: the IPC namespace is the sandbox's own",
        [
            SYS_shmget, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_semget, SYS_semop, SYS_semctl,
            SYS_semtimedop, SYS_msgget, SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_mq_open,
            SYS_mq_unlink, SYS_mq_timedsend, SYS_mq_timedreceive, SYS_mq_notify,
            SYS_mq_getsetattr,
        ]
    ),
    group!(
        Eperm,
        "the kernel keyring is not namespaced",
        [SYS_keyctl, SYS_add_key, SYS_request_key]
    ),
    group!(
        Eperm,
        "eBPF and performance counters reach kernel memory and leak host information",
        [SYS_bpf, SYS_perf_event_open, SYS_lookup_dcookie]
    ),
    group!(
        Eperm,
        "a common building block of kernel exploits",
        [SYS_userfaultfd]
    ),
    group!(
        Eperm,
        "io_uring: a large attack surface whose operations bypass seccomp",
        [SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register]
    ),
    group!(
        Eperm,
        "kernels and kernel modules",
        [
            SYS_kexec_load, SYS_kexec_file_load, SYS_init_module, SYS_finit_module,
            SYS_delete_module,
        ]
    ),
    group!(
        Eperm,
        "host-wide settings: reboot, swap, accounting, quotas, the kernel log, the clock, \
         raw I/O ports, terminal hangup, fanotify",
        [
            SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct, SYS_quotactl, SYS_quotactl_fd,
            SYS_syslog, SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex,
            SYS_iopl, SYS_ioperm, SYS_vhangup, SYS_fanotify_init,
        ]
    ),
    group!(
        Eperm,
        "file handles bypass path-based confinement",
        [SYS_open_by_handle_at, SYS_name_to_handle_at]
    ),
    group!(
        Eperm,
        "the mount table and root are fixed at start (a mount could reveal what a mask hides)",
        [
            SYS_mount, SYS_umount2, SYS_pivot_root, SYS_fsopen, SYS_fsconfig, SYS_fsmount,
            SYS_fspick, SYS_open_tree, SYS_move_mount, SYS_mount_setattr,
        ]
    ),
    group!(
        Eperm,
        "nested namespaces widen the kernel attack surface",
        [SYS_unshare, SYS_setns]
    ),
    group!(
        Enosys,
        "clone3's flags live in memory, out of BPF's reach: ENOSYS makes libc fall back to \
         clone, whose flags the EPERM filter checks",
        [SYS_clone3]
    ),
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

/// Address families `socket` accepts: Unix sockets, IP, and netlink for reading routes and
/// addresses (`getifaddrs`, `ip`). Everything else — `AF_VSOCK` (the VM host's port space),
/// `AF_PACKET`, `AF_KEY`, `AF_ALG`, Bluetooth, ... — fails with `EAFNOSUPPORT`.
pub const ALLOWED_SOCKET_FAMILIES: &[(&str, libc::c_int)] = &[
    ("AF_UNIX", libc::AF_UNIX),
    ("AF_INET", libc::AF_INET),
    ("AF_INET6", libc::AF_INET6),
    ("AF_NETLINK", libc::AF_NETLINK),
];

/// Netlink protocols `socket(AF_NETLINK, ..)` accepts. Others (audit, uevents, sock_diag,
/// xfrm, netfilter, ...) fail with `EAFNOSUPPORT`, which libaudit and udev treat as "absent".
pub const ALLOWED_NETLINK_PROTOCOLS: &[(&str, libc::c_int)] =
    &[("NETLINK_ROUTE", libc::NETLINK_ROUTE)];

/// Address families `socketpair` accepts (the only one Linux implements it for).
pub const ALLOWED_SOCKETPAIR_FAMILIES: &[(&str, libc::c_int)] = &[("AF_UNIX", libc::AF_UNIX)];

/// Errors building or installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter")]
    Build(#[from] seccompiler::BackendError),
    #[error("installing the seccomp filter")]
    Install(#[from] seccompiler::Error),
    #[error("seccomp profile is only defined for x86_64")]
    UnsupportedArch,
}

/// The syscalls of [`SYSCALLS`] with the given verdict.
pub fn syscalls_with(verdict: Verdict) -> impl Iterator<Item = &'static Syscall> {
    SYSCALLS
        .iter()
        .filter(move |g| g.verdict == verdict)
        .flat_map(|g| g.syscalls.iter())
}

fn cond(index: u8, op: SeccompCmpOp, value: libc::c_int) -> Result<SeccompCondition, SeccompError> {
    // Dword: the kernel reads these arguments as `int`, so only the low 32 bits count.
    Ok(SeccompCondition::new(
        index,
        SeccompCmpArgLen::Dword,
        op,
        value as u32 as u64,
    )?)
}

/// A rule matching when argument `index` is none of `allowed`.
fn none_of(index: u8, allowed: &[(&str, libc::c_int)]) -> Result<SeccompRule, SeccompError> {
    let conds = allowed
        .iter()
        .map(|(_, v)| cond(index, SeccompCmpOp::Ne, *v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SeccompRule::new(conds)?)
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(SeccompError::UnsupportedArch)
    }
}

/// Filter 1: named syscalls pass on to the other filters, the rest get `ENOSYS`.
fn allow_list(arch: TargetArch) -> Result<SeccompFilter, SeccompError> {
    let named = syscalls_with(Verdict::Allow)
        .chain(syscalls_with(Verdict::Eperm))
        .map(|s| (s.nr, Vec::new()))
        .collect();
    Ok(SeccompFilter::new(
        named,
        SeccompAction::Errno(libc::ENOSYS as u32),
        SeccompAction::Allow,
        arch,
    )?)
}

/// Filter 2: `EPERM` for the denied groups, namespace flags on `clone`, odd personalities.
fn eperm(arch: TargetArch) -> Result<SeccompFilter, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = syscalls_with(Verdict::Eperm)
        .map(|s| (s.nr, Vec::new()))
        .collect();
    let clone_rules = DENIED_CLONE_FLAGS
        .iter()
        .map(|(_, flag)| {
            let flag = *flag as u64;
            let masked = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?;
            Ok(SeccompRule::new(vec![masked])?)
        })
        .collect::<Result<Vec<_>, SeccompError>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let personality = ALLOWED_PERSONALITIES
        .iter()
        .map(|p| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *p))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, vec![SeccompRule::new(personality)?]);
    Ok(SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?)
}

/// Filter 3: `EAFNOSUPPORT` for socket families (and netlink protocols) sandboxes do not need.
fn socket_families(arch: TargetArch) -> Result<SeccompFilter, SeccompError> {
    let mut netlink_other_protocol = vec![cond(0, SeccompCmpOp::Eq, libc::AF_NETLINK)?];
    for (_, protocol) in ALLOWED_NETLINK_PROTOCOLS {
        netlink_other_protocol.push(cond(2, SeccompCmpOp::Ne, *protocol)?);
    }
    let rules = BTreeMap::from([
        (
            libc::SYS_socket,
            vec![
                none_of(0, ALLOWED_SOCKET_FAMILIES)?,
                SeccompRule::new(netlink_other_protocol)?,
            ],
        ),
        (
            libc::SYS_socketpair,
            vec![none_of(0, ALLOWED_SOCKETPAIR_FAMILIES)?],
        ),
    ]);
    Ok(SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
        arch,
    )?)
}

/// Compiles the three BPF programs, in the order [`apply`] installs them.
pub fn build() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    [allow_list(arch)?, eperm(arch)?, socket_families(arch)?]
        .into_iter()
        .map(|f| Ok(f.try_into()?))
        .collect()
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

    fn verdict_of(name: &str) -> Option<Verdict> {
        SYSCALLS
            .iter()
            .find(|g| g.syscalls.iter().any(|s| s.name == name))
            .map(|g| g.verdict)
    }

    #[test]
    fn table_has_unique_numbers_and_a_reason_per_group() {
        let mut nrs: Vec<_> = SYSCALLS
            .iter()
            .flat_map(|g| g.syscalls.iter().map(|s| s.nr))
            .collect();
        let named = nrs.len();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), named, "a syscall is named twice");
        for group in SYSCALLS {
            assert!(!group.why.trim().is_empty(), "{group:?} has no reason");
            assert!(!group.syscalls.is_empty(), "{group:?} is empty");
        }
        for name in [
            "SYS_keyctl",
            "SYS_bpf",
            "SYS_io_uring_setup",
            "SYS_userfaultfd",
            "SYS_mount",
            "SYS_unshare",
        ] {
            assert_eq!(verdict_of(name), Some(Verdict::Eperm), "{name}");
        }
        // ptrace stays allowed, as in Docker's default profile.
        assert_eq!(verdict_of("SYS_ptrace"), Some(Verdict::Allow));
        assert_eq!(verdict_of("SYS_clone3"), Some(Verdict::Enosys));
        // open_tree_attr (467, Linux 6.15) is newer than the table: not named, so ENOSYS.
        assert!(!nrs.contains(&467));
    }

    #[test]
    fn filters_compile() {
        let progs = build().unwrap();
        assert_eq!(progs.len(), 3);
        assert!(progs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    /// Installs the filters in a forked child and checks what they allow and deny there. Each
    /// check sets one bit of the exit code, so a failure names the check.
    #[test]
    #[allow(unsafe_code)]
    fn filter_allows_and_denies_in_a_child() {
        // Built before the fork: the child of a multi-threaded test process must not allocate.
        let progs = build().unwrap();
        // SAFETY: the child only makes raw syscalls (seccompiler's apply_filter does not
        // allocate) and leaves with `_exit`; it never returns into the test harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                if nix::sys::prctl::set_no_new_privs().is_err()
                    || progs.iter().any(|p| seccompiler::apply_filter(p).is_err())
                {
                    crate::sys::exit_immediately(255);
                }
                let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                // A call's result: `Ok(value)` or `Err(errno)`.
                let res = |rc: libc::c_long| if rc < 0 { Err(errno()) } else { Ok(rc) };
                let sys = |nr: libc::c_long, a: libc::c_long, b: libc::c_long, c: libc::c_long| {
                    // SAFETY: raw syscalls with integer arguments only; any descriptor they
                    // return is leaked to `_exit`.
                    res(unsafe { libc::syscall(nr, a, b, c, 0, 0) })
                };
                let fails = |r: Result<libc::c_long, i32>, e: i32| r != Err(e);
                let socket = |family: libc::c_int, ty: libc::c_int, proto: libc::c_int| {
                    sys(libc::SYS_socket, family.into(), ty.into(), proto.into())
                };
                let mut pair = [0 as libc::c_int; 2];
                let pair_ptr = pair.as_mut_ptr() as libc::c_long;
                let socketpair = |family: libc::c_int| {
                    // SAFETY: `pair` outlives the call and holds the two descriptors.
                    res(unsafe {
                        libc::syscall(libc::SYS_socketpair, family, libc::SOCK_STREAM, 0, pair_ptr)
                    })
                };
                let checks = [
                    fails(sys(libc::SYS_keyctl, 0, 0, 0), libc::EPERM),
                    fails(
                        sys(libc::SYS_unshare, libc::CLONE_NEWUTS.into(), 0, 0),
                        libc::EPERM,
                    ),
                    fails(sys(libc::SYS_clone3, 0, 0, 0), libc::ENOSYS),
                    sys(libc::SYS_getpid, 0, 0, 0).is_err(),
                    // open_tree_attr (Linux 6.15), not in the table.
                    fails(sys(467, 0, 0, 0), libc::ENOSYS),
                    fails(sys(100_000, 0, 0, 0), libc::ENOSYS),
                    // getpid through the x32 numbering.
                    fails(sys(0x4000_0000 | libc::SYS_getpid, 0, 0, 0), libc::ENOSYS),
                    fails(
                        socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0),
                        libc::EAFNOSUPPORT,
                    ),
                    fails(
                        socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
                        libc::EAFNOSUPPORT,
                    ),
                    fails(
                        socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
                        libc::EAFNOSUPPORT,
                    ),
                    fails(
                        socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
                        libc::EAFNOSUPPORT,
                    ),
                    socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).is_err(),
                    socket(libc::AF_INET6, libc::SOCK_STREAM, 0).is_err(),
                    socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0).is_err(),
                    socketpair(libc::AF_UNIX).is_err(),
                    fails(socketpair(libc::AF_INET), libc::EAFNOSUPPORT),
                ];
                let code = checks
                    .iter()
                    .enumerate()
                    .fold(0u32, |code, (i, failed)| code | (u32::from(*failed) << i));
                // Exit codes carry 8 bits: report the first failing check's index + 1.
                let first = if code == 0 {
                    0
                } else {
                    code.trailing_zeros() as i32 + 1
                };
                crate::sys::exit_immediately(first)
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Exited(child, 0),
                    "exit code = 1 + index of the first failing check (255: install failed)"
                );
            }
        }
    }
}
