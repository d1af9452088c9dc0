//! Attack tests: every isolation guarantee of docs/isolation.md is attacked from inside a real
//! sandbox through the public API, and each test asserts that the attack failed and, where it
//! can, that the host-side target is untouched. Same requirements as `e2e` (root, the agent
//! binary, the default image); skipped loudly otherwise. Guarantees both isolation tiers give
//! run once per tier (`Real::tiers`; the gvisor run needs runsc); the host-kernel ones (seccomp,
//! the standard tier's limits) run on `standard`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::assert_error;
use super::e2e::Real;

/// Runs `command` without a session (a wedged shell cannot hide a result) and returns the body.
pub(super) async fn run(rs: &Real, id: &str, command: &str, timeout_ms: u64) -> Value {
    let (status, body) = rs
        .call(
            Method::POST,
            &format!("/v1/sandboxes/{id}/api/execute"),
            json!({"command": command, "sessionId": "__DISABLE_SESSION__", "timeoutMs": timeout_ms}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Runs a Python program in the sandbox.
pub(super) async fn python(rs: &Real, id: &str, program: &str) -> Value {
    run(
        rs,
        id,
        &format!("python3 - <<'PYEOF'\n{program}\nPYEOF"),
        120_000,
    )
    .await
}

pub(super) fn stdout(body: &Value) -> &str {
    body["stdout"].as_str().unwrap_or_default()
}

/// `key=value` lines of a command's output.
fn field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    stdout(body)
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// A token no file or process on this host can contain by accident.
fn token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sandpit-{what}-{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_host_files_processes_and_loopback_are_unreachable() {
    for tier in Real::tiers() {
        let Some(rs) = Real::start_tier(tier).await else {
            return;
        };
        let secret = token("secret");
        let marker = std::env::temp_dir().join(format!("{secret}.txt"));
        std::fs::write(&marker, &secret).unwrap();
        let mut host_sleep = std::process::Command::new("sleep")
            .arg("31337")
            .spawn()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();

        let out = run(
            &rs,
            "atk-host",
            &format!(
                "cat {m} 2>/dev/null; echo cat=$?; \
                 grep -rsl {secret} /tmp /proc/1/root/tmp /proc/*/root/tmp; echo grep=$?; \
                 echo pids=$(ls /proc | grep -c '^[0-9]*$'); \
                 echo seen=$(ps -eo args | grep -c '[s]leep 31337'); \
                 kill -9 {pid} 2>/dev/null; echo kill=$?; \
                 echo netdevs=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)",
                m = marker.display(),
                pid = host_sleep.id(),
            ),
            30_000,
        )
        .await;
        assert!(!stdout(&out).contains(&secret), "host file leaked: {out}");
        assert_eq!(field(&out, "cat"), Some("1"), "{out}");
        assert_ne!(field(&out, "grep"), Some("0"), "{out}");
        assert_eq!(
            field(&out, "seen"),
            Some("0"),
            "host process visible: {out}"
        );
        assert_eq!(
            field(&out, "kill"),
            Some("1"),
            "signalled a host pid: {out}"
        );
        assert_eq!(
            field(&out, "netdevs"),
            Some("lo,"),
            "a network device besides lo: {out}"
        );
        let pids: usize = field(&out, "pids").unwrap().parse().unwrap();
        assert!(pids < 20, "the sandbox sees {pids} processes: {out}");
        assert_eq!(
            host_sleep.try_wait().unwrap(),
            None,
            "the host process died"
        );

        // The host's loopback server is not reachable: the sandbox's 127.0.0.1 is its own.
        let out = python(
            &rs,
            "atk-host",
            &format!(
                "import socket\n\
                 for target in [('127.0.0.1', {port}), ('localhost', {port})]:\n\
                 \x20   try:\n\
                 \x20       socket.create_connection(target, 2).close(); print('reached', target)\n\
                 \x20   except OSError as e: print('refused', type(e).__name__)\n"
            ),
        )
        .await;
        assert!(!stdout(&out).contains("reached"), "{out}");
        assert!(stdout(&out).contains("refused"), "{out}");
        let accepted = listener.accept();
        assert!(
            accepted.is_err(),
            "the host listener got a connection from the sandbox"
        );

        host_sleep.kill().unwrap();
        host_sleep.wait().unwrap();
        std::fs::remove_file(&marker).unwrap();
        rs.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_kernel_interfaces_are_denied() {
    // Host-kernel seccomp guarantees: the standard tier's. Under gvisor these calls reach
    // gVisor's own kernel instead (see docs/isolation.md, "The gvisor tier").
    let Some(rs) = Real::start().await else {
        return;
    };
    // Raw syscalls, so no missing tool can make an attack "fail" for the wrong reason.
    let out = python(
        &rs,
        "atk-kernel",
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         attacks = {\n\
         \x20   'keyctl': (250, 0, 0, 0, 0), 'bpf': (321, 0, 0, 0), 'perf_event_open': (298, 0, 0, -1, -1, 0),\n\
         \x20   'io_uring_setup': (425, 8, 0), 'userfaultfd': (323, 0), 'init_module': (175, 0, 0, 0),\n\
         \x20   'finit_module': (313, 0, 0, 0), 'delete_module': (176, 0, 0), 'kexec_load': (246, 0, 0, 0, 0),\n\
         \x20   'unshare_user': (272, 0x10000000), 'unshare_mount': (272, 0x00020000),\n\
         \x20   'setns': (308, 0, 0), 'reboot': (169, 0, 0, 0, 0), 'swapoff': (168, 0),\n\
         \x20   'open_by_handle_at': (304, 0, 0, 0),\n\
         }\n\
         for name, args in attacks.items():\n\
         \x20   rc = libc.syscall(*[ctypes.c_long(a) for a in args])\n\
         \x20   print(f'{name}={rc}:{ctypes.get_errno()}')\n",
    )
    .await;
    for name in [
        "keyctl",
        "bpf",
        "perf_event_open",
        "io_uring_setup",
        "userfaultfd",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "unshare_user",
        "unshare_mount",
        "setns",
        "reboot",
        "swapoff",
        "open_by_handle_at",
    ] {
        assert_eq!(
            field(&out, name),
            Some("-1:1"),
            "{name} was not denied with EPERM: {out}"
        );
    }

    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let out = run(
        &rs,
        "atk-kernel",
        "mkdir -p /tmp/p; mount -t proc proc /tmp/p 2>/dev/null; echo proc=$?; \
         mount -t ext4 /dev/vda /tmp/p 2>/dev/null; echo disk=$?; \
         echo blockdevs=$(ls /dev | grep -cE '^(vd|sd|nvme|loop)'); \
         echo '|/tmp/evil' > /proc/sys/kernel/core_pattern 2>/dev/null; echo sysctl=$?; \
         echo b > /proc/sysrq-trigger 2>/dev/null; echo trigger=$?; \
         echo x > /sys/kernel/uevent_helper 2>/dev/null; echo sysfs=$?; \
         echo nnp=$(awk '/^NoNewPrivs/{print $2}' /proc/self/status); \
         echo capbnd=$(awk '/^CapBnd/{print $2}' /proc/self/status)",
        30_000,
    )
    .await;
    for key in ["proc", "disk", "sysctl", "trigger", "sysfs"] {
        let code = field(&out, key).unwrap_or("0");
        assert_ne!(code, "0", "{key} write or mount succeeded: {out}");
    }
    assert_eq!(field(&out, "blockdevs"), Some("0"), "{out}");
    assert_eq!(field(&out, "nnp"), Some("1"), "{out}");
    let capbnd = u64::from_str_radix(field(&out, "capbnd").unwrap(), 16).unwrap();
    const CAP_SYS_MODULE: u32 = 16;
    const CAP_SYS_ADMIN: u32 = 21;
    assert_eq!(
        capbnd & (1 << CAP_SYS_ADMIN),
        0,
        "CAP_SYS_ADMIN kept: {out}"
    );
    assert_eq!(
        capbnd & (1 << CAP_SYS_MODULE),
        0,
        "CAP_SYS_MODULE kept: {out}"
    );
    let after = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    assert_eq!(after, core_pattern, "the host's core_pattern changed");
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_seccomp_allow_list_refuses_unnamed_syscalls_and_socket_families() {
    let Some(rs) = Real::start().await else {
        return;
    };
    // `name=ok` or `name=err:<errno>` per attempt; raw syscalls through ctypes, sockets through
    // Python's socket module (no tool missing from the image can fake a refusal).
    let out = python(
        &rs,
        "atk-seccomp",
        "import ctypes, socket\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         def sys(*args):\n\
         \x20   rc = libc.syscall(*[ctypes.c_long(a) for a in args])\n\
         \x20   return 'ok' if rc >= 0 else f'err:{ctypes.get_errno()}'\n\
         def sock(family, kind, proto=0):\n\
         \x20   try:\n\
         \x20       socket.socket(family, kind, proto).close()\n\
         \x20       return 'ok'\n\
         \x20   except OSError as e:\n\
         \x20       return f'err:{e.errno}'\n\
         def pair(family):\n\
         \x20   try:\n\
         \x20       for s in socket.socketpair(family, socket.SOCK_STREAM): s.close()\n\
         \x20       return 'ok'\n\
         \x20   except OSError as e:\n\
         \x20       return f'err:{e.errno}'\n\
         results = {\n\
         \x20   'vsock': sock(socket.AF_VSOCK, socket.SOCK_STREAM),\n\
         \x20   'vsock_dgram': sock(socket.AF_VSOCK, socket.SOCK_DGRAM),\n\
         \x20   'packet': sock(socket.AF_PACKET, socket.SOCK_RAW),\n\
         \x20   'alg': sock(socket.AF_ALG, socket.SOCK_SEQPACKET),\n\
         \x20   'netlink_audit': sock(socket.AF_NETLINK, socket.SOCK_RAW, 9),\n\
         \x20   'netlink_uevent': sock(socket.AF_NETLINK, socket.SOCK_DGRAM, 15),\n\
         \x20   'pair_inet': pair(socket.AF_INET),\n\
         \x20   'open_tree_attr': sys(467, -100, 0, 0, 0, 0),\n\
         \x20   'cachestat': sys(451, -1, 0, 0, 0),\n\
         \x20   'made_up': sys(1000),\n\
         \x20   'ptrace_agent': sys(101, 16, 1, 0, 0),\n\
         \x20   'keyctl': sys(250, 0, 0, 0, 0),\n\
         \x20   'bpf': sys(321, 0, 0, 0),\n\
         \x20   'inet': sock(socket.AF_INET, socket.SOCK_STREAM),\n\
         \x20   'inet6': sock(socket.AF_INET6, socket.SOCK_DGRAM),\n\
         \x20   'unix': sock(socket.AF_UNIX, socket.SOCK_STREAM),\n\
         \x20   'netlink_route': sock(socket.AF_NETLINK, socket.SOCK_RAW, 0),\n\
         \x20   'pair_unix': pair(socket.AF_UNIX),\n\
         \x20   'ifaces': 'ok' if socket.if_nameindex() else 'err:none',\n\
         }\n\
         for name, result in results.items():\n\
         \x20   print(f'{name}={result}')\n",
    )
    .await;
    const EPERM: &str = "err:1";
    const ENOSYS: &str = "err:38";
    const EAFNOSUPPORT: &str = "err:97";
    let expected = [
        // AF_VSOCK would reach the VM host's vsock port space; no sandbox needs these families.
        ("vsock", EAFNOSUPPORT),
        ("vsock_dgram", EAFNOSUPPORT),
        ("packet", EAFNOSUPPORT),
        ("alg", EAFNOSUPPORT),
        ("netlink_audit", EAFNOSUPPORT),
        ("netlink_uevent", EAFNOSUPPORT),
        ("pair_inet", EAFNOSUPPORT),
        // Syscalls the table does not name, whatever the kernel offers.
        ("open_tree_attr", ENOSYS),
        ("cachestat", ENOSYS),
        ("made_up", ENOSYS),
        // Still refused: PTRACE_ATTACH to the agent (PID 1), the dangerous calls stay EPERM.
        ("ptrace_agent", EPERM),
        ("keyctl", EPERM),
        ("bpf", EPERM),
        // What sandboxes need keeps working.
        ("inet", "ok"),
        ("inet6", "ok"),
        ("unix", "ok"),
        ("netlink_route", "ok"),
        ("pair_unix", "ok"),
        ("ifaces", "ok"),
    ];
    for (name, want) in expected {
        assert_eq!(field(&out, name), Some(want), "{name}: {out}");
    }
    rs.stop().await;
}

/// The other half of the allow-list: everyday tools still work under it. Each check prints
/// `name=ok` or `name=fail: <last output>`; a syscall the table forgot shows up here as a
/// failure (tools rarely survive an unexpected ENOSYS).
#[tokio::test(flavor = "multi_thread")]
async fn serial_seccomp_allow_list_keeps_everyday_tools_working() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let script = r#"
check() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name=ok"; else echo "$name=fail: $(printf %s "$out" | tail -c 300 | tr '\n' ' ')"; fi; }
cd /tmp
cat > mp.py <<'PY'
import multiprocessing, threading, asyncio
if __name__ == "__main__":
    ts = [threading.Thread(target=sum, args=([1, 2],)) for _ in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    for method in ("fork", "spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            assert pool.map(abs, [-1, -2]) == [1, 2]
    async def main():
        p = await asyncio.create_subprocess_exec("true")
        assert await p.wait() == 0
    asyncio.run(main())
PY
cat > inotify.py <<'PY'
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
assert fd >= 0 and libc.inotify_add_watch(fd, b"/tmp", 0x100) >= 0, ctypes.get_errno()
open("/tmp/inotify-probe", "w").close()
assert len(os.read(fd, 4096)) > 0
PY
cat > node.js <<'JS'
const { Worker } = require("worker_threads");
const cp = require("child_process");
const fs = require("fs");
cp.execFileSync("true");
fs.watch("/tmp").close();
const server = require("http").createServer((_, res) => res.end("hi")).listen(0, "127.0.0.1", () => {
  require("http").get(`http://127.0.0.1:${server.address().port}/`, (res) => {
    res.resume();
    res.on("end", () => {
      server.close();
      new Worker("require('crypto').randomBytes(8)", { eval: true }).on("exit", (c) => process.exit(c));
    });
  });
});
JS
check coreutils bash -c 'mkdir -p d && cp /etc/hostname d/h && mv d/h d/i && stat d/i && ls -la d && du -s d && df / && sort /etc/passwd && chmod 600 d/i && ln -s i d/l && readlink d/l && touch -d @0 d/i && flock d/i true && rm -r d && nproc && uname -a && hostname && date && timeout 1 sleep 0.1'
check procs bash -c 'ps aux && top -bn1'
check python_threads_mp_asyncio python3 mp.py
check python_inotify python3 inotify.py
check python_sqlite python3 -c 'import sqlite3; c = sqlite3.connect("/tmp/x.db"); c.execute("create table t(a)"); c.commit()'
check numpy python3 -c 'import numpy; assert numpy.dot(numpy.ones((300, 300)), numpy.ones((300, 300)))[0, 0] == 300'
check ipython ipython3 -c 'print(1 + 1)'
check node node node.js
check npm npm --version
check git bash -c 'git init -q g && cd g && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x && git log --oneline | grep -q x'
check gcc bash -c 'printf "int main(void){return 0;}" > a.c && gcc a.c -o a && ./a'
check curl_wget bash -c 'python3 -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 & for i in $(seq 50); do curl -sf http://127.0.0.1:8765/ >/dev/null && break; sleep 0.1; done; curl -sf http://127.0.0.1:8765/ >/dev/null && wget -qO /dev/null http://127.0.0.1:8765/; rc=$?; kill $!; exit $rc'
check getaddrinfo python3 -c 'import socket; assert socket.getaddrinfo("127.0.0.1", 80, flags=socket.AI_ADDRCONFIG)'
check pty bash -c 'script -qc tty /dev/null | grep -q /dev/pts'
check tar_gzip bash -c 'tar czf t.tgz /etc/hostname && tar tzf t.tgz'
check perl perl -e 'fork or exit; wait; exit $?'
"#;
    let out = run(&rs, "seccomp-compat", script, 180_000).await;
    let names = [
        "coreutils",
        "procs",
        "python_threads_mp_asyncio",
        "python_inotify",
        "python_sqlite",
        "numpy",
        "ipython",
        "node",
        "npm",
        "git",
        "gcc",
        "curl_wget",
        "getaddrinfo",
        "pty",
        "tar_gzip",
        "perl",
    ];
    for name in names {
        assert_eq!(field(&out, name), Some("ok"), "{name}: {out}");
    }
    rs.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_file_api_cannot_escape_the_sandbox() {
    for tier in Real::tiers() {
        let Some(rs) = Real::start_tier(tier).await else {
            return;
        };
        let id = "atk-files";
        let secret = token("hostfile");
        let host_file = std::env::temp_dir().join(&secret);
        std::fs::write(&host_file, "host-only").unwrap();
        let host = host_file.display().to_string();
        let api = |route: &str| format!("/v1/sandboxes/{id}/api/{route}");

        // A distinctive line in the sandbox's own passwd, and links pointing out of /workspace.
        let out = run(
            &rs,
            id,
            &format!(
                "echo 'sandboxonly:x:4242:4242::/:/bin/false' >> /etc/passwd && \
                 ln -s {host} /workspace/to-host && ln -s /etc/passwd /workspace/pw && \
                 ln -s ../../../../../../.. /workspace/up && echo ok"
            ),
            30_000,
        )
        .await;
        assert_eq!(stdout(&out), "ok\n", "{out}");

        for path in [
            host.clone(),
            format!("/../../../..{host}"),
            format!("../../../../../../..{host}"),
            "/workspace/to-host".to_owned(),
            format!("/workspace/up{host}"),
        ] {
            let (s, b) = rs
                .call(Method::POST, &api("read"), json!({"path": path}))
                .await;
            assert_error(s, &b, 404, "FILE_NOT_FOUND");
        }
        let (s, b) = rs
            .call(Method::POST, &api("read"), json!({"path": "/workspace/pw"}))
            .await;
        assert_eq!(s, 200, "{b}");
        let content = b["content"].as_str().unwrap();
        assert!(
            content.contains("sandboxonly:x:4242"),
            "read the host's passwd: {content}"
        );
        let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        assert!(!host_passwd.contains("sandboxonly"));

        // Writes through `..`, absolute paths and symlinks land inside the sandbox only.
        let escape = format!("../../../../../../..{host}-written");
        for (path, content) in [
            (escape.as_str(), "escaped?"),
            ("/workspace/to-host", "pwned"),
            (host.as_str(), "pwned-absolute"),
        ] {
            let (s, b) = rs
                .call(
                    Method::POST,
                    &api("write"),
                    json!({"path": path, "content": content}),
                )
                .await;
            assert_eq!(s, 200, "{b}");
        }
        assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host-only");
        assert!(!std::path::Path::new(&format!("{host}-written")).exists());
        let out = run(
            &rs,
            id,
            &format!("cat {host}; echo; cat {host}-written"),
            30_000,
        )
        .await;
        assert!(stdout(&out).contains("pwned-absolute"), "{out}");
        assert!(stdout(&out).contains("escaped?"), "{out}");

        // Deleting and renaming through a link to a host path touches only the sandbox.
        let (s, b) = rs
            .call(Method::POST, &api("delete"), json!({"path": host}))
            .await;
        assert_eq!(s, 200, "{b}");
        assert!(host_file.exists(), "deleted a host file");
        std::fs::remove_file(&host_file).unwrap();
        rs.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_sandboxes_cannot_see_or_signal_each_other() {
    for tier in Real::tiers() {
        let Some(rs) = Real::start_tier(tier).await else {
            return;
        };
        let secret = token("b-secret");
        let out = rs
            .exec(
                "atk-victim",
                &format!(
                    "echo {secret} > /workspace/secret; echo {secret} > /tmp/secret; \
                     nohup sleep 31338 >/dev/null 2>&1 & echo started"
                ),
            )
            .await;
        assert_eq!(stdout(&out), "started\n", "{out}");

        let out = run(
            &rs,
            "atk-attacker",
            &format!(
                "grep -rsl {secret} /workspace /tmp /root /proc/*/root/workspace 2>/dev/null; echo grep=$?; \
                 p=sleep; p=\"$p 31338\"; echo seen=$(ps -eo args | grep -c \"^$p\"); \
                 pkill -9 -f \"$p\"; echo pkill=$?; \
                 ls /proc/*/root/workspace/secret 2>/dev/null | wc -l | sed 's/^/visible=/'"
            ),
            30_000,
        )
        .await;
        assert!(!stdout(&out).contains(&secret), "{out}");
        assert_ne!(field(&out, "grep"), Some("0"), "{out}");
        assert_eq!(field(&out, "seen"), Some("0"), "{out}");
        assert_eq!(field(&out, "pkill"), Some("1"), "{out}");
        assert_eq!(field(&out, "visible"), Some("0"), "{out}");

        let out = rs
            .exec(
                "atk-victim",
                "pgrep -fc 'sleep 31338'; cat /workspace/secret",
            )
            .await;
        assert_eq!(
            stdout(&out),
            format!("1\n{secret}\n"),
            "the victim was touched: {out}"
        );
        rs.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serial_attack_bombs_stay_inside_their_limits() {
    let Some(rs) = Real::start().await else {
        return;
    };
    let (s, b) = rs
        .call(
            Method::POST,
            "/v1/sandboxes",
            json!({"id": "atk-bomb", "limits": {"pids": 64, "memoryMb": 128}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    rs.exec("atk-bystander", "true").await;

    // A bounded fork bomb: count how many children the pids limit lets through.
    let out = python(
        &rs,
        "atk-bomb",
        "import os, signal, time\n\
         kids, failed = [], 0\n\
         for _ in range(300):\n\
         \x20   try:\n\
         \x20       pid = os.fork()\n\
         \x20   except OSError:\n\
         \x20       failed += 1; continue\n\
         \x20   if pid == 0:\n\
         \x20       time.sleep(60); os._exit(0)\n\
         \x20   kids.append(pid)\n\
         print(f'forked={len(kids)}'); print(f'failed={failed}')\n\
         for k in kids: os.kill(k, signal.SIGKILL)\n\
         for k in kids: os.waitpid(k, 0)\n",
    )
    .await;
    let forked: u32 = field(&out, "forked").unwrap().parse().unwrap();
    assert!(forked < 64, "{forked} children under a 64-pid limit: {out}");
    assert!(field(&out, "failed").unwrap() != "0", "{out}");

    // The classic bomb, unbounded, while another sandbox and the server keep answering.
    let bomb = {
        let (client, base, key) = (rs.client.clone(), rs.base.clone(), rs.key.clone());
        tokio::spawn(async move {
            client
                .post(format!("{base}/v1/sandboxes/atk-bomb/api/execute"))
                .bearer_auth(key)
                .json(&json!({"command": "bash -c ':(){ :|:& };:'; sleep 5",
                              "sessionId": "__DISABLE_SESSION__", "timeoutMs": 4000}))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answered = Instant::now();
    let out = rs.exec("atk-bystander", "echo still-here").await;
    assert_eq!(stdout(&out), "still-here\n");
    let bystander_latency = answered.elapsed();
    assert!(
        bystander_latency < Duration::from_secs(3),
        "bystander took {bystander_latency:?}"
    );
    let (s, _) = rs.call(Method::GET, "/v1/sandboxes", Value::Null).await;
    assert_eq!(s, 200);
    let _ = bomb.await;
    // A sandbox full of processes is still stoppable; it wakes clean.
    let (s, b) = rs
        .call(Method::POST, "/v1/sandboxes/atk-bomb/stop", json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let out = rs.exec("atk-bomb", "echo recovered").await;
    assert_eq!(stdout(&out), "recovered\n");

    // A memory bomb is killed inside its cgroup; everything else keeps running.
    let out = python(
        &rs,
        "atk-bomb",
        "import sys\n\
         hog = []\n\
         for i in range(1, 101):\n\
         \x20   hog.append(b'\\x01' * (10 << 20)); print(f'allocated={i * 10}', flush=True)\n",
    )
    .await;
    assert_eq!(
        out["exitCode"], 137,
        "the memory bomb was not OOM-killed: {}",
        out["exitCode"]
    );
    let reached: u32 = stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("allocated=")?.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(
        reached <= 130,
        "allocated {reached} MiB under a 128 MiB limit"
    );
    let out = rs.exec("atk-bomb", "echo survived").await;
    assert_eq!(
        stdout(&out),
        "survived\n",
        "the sandbox's agent died with the bomb"
    );
    let out = rs.exec("atk-bystander", "echo fine").await;
    assert_eq!(stdout(&out), "fine\n");
    rs.stop().await;
}
