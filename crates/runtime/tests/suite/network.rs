//! The run dir (`/run/sandpit`), the proxy environment and the `full` network mode.
//!
//! Traffic goes only to loopback and to a network namespace the test creates (`ip netns add`
//! with a veth pair on a 10.x/30).

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;

use sandpit_protocol::control::NetworkMode;
use sandpit_protocol::netpolicy::EgressPolicy;
use sandpit_runtime::testnet::{
    TestNet, connect_command as connect_cmd, count_accepts, python_command as python,
};
use sandpit_runtime::{Driver, EgressEndpoint, RunFile};

use super::harness::{Env, exec, ok, unique_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_run_dir_is_read_only_inside() {
    let Some(env) = Env::new() else { return };
    let id = unique_id("rundir");
    let mut spec = env.spec(&id);
    spec.run_files = vec![RunFile {
        name: "ca.crt".into(),
        contents: b"original\n".to_vec(),
    }];
    let (bridged, mut from_sandbox) = tokio::sync::mpsc::unbounded_channel();
    spec.egress = Some(EgressEndpoint::new(move |stream| {
        let _ = bridged.send(stream);
    }));
    let started = env.start(&spec).await;
    let run = env.driver.layout().run_dir(&id);
    let meta = std::fs::metadata(&run).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
    // Sandbox users are unprivileged uids of their own range: anyone may connect.
    let socket = std::fs::metadata(run.join("egress.sock")).unwrap();
    assert_eq!(socket.mode() & 0o777, 0o666);
    let s = &started;
    assert_eq!(ok(s, "cat /run/sandpit/ca.crt").await, "original");
    // Files the host adds later show up too.
    std::fs::write(run.join("later"), "later\n").unwrap();
    assert_eq!(ok(s, "cat /run/sandpit/later").await, "later");

    // Every way of changing the dir fails; the host's files survive untouched.
    for attack in [
        "echo evil > /run/sandpit/ca.crt",
        "rm -f /run/sandpit/ca.crt",
        "mv /run/sandpit/ca.crt /run/sandpit/moved",
        "touch /run/sandpit/new",
        "ln -s /etc/passwd /run/sandpit/link",
        "mkdir /run/sandpit/d",
        "chmod 777 /run/sandpit",
        "chmod 666 /run/sandpit/ca.crt",
        "rm -rf /run/sandpit",
        "rmdir /run/sandpit",
        "mv /run/sandpit /run/elsewhere",
        "umount /run/sandpit",
        "umount -l /run/sandpit",
        "mount -o remount,rw /run/sandpit",
        "mount -t tmpfs evil /run/sandpit",
        "unshare -Urm sh -c 'umount /run/sandpit && echo evil > /run/sandpit/ca.crt'",
        "unshare -Urm sh -c 'mount -o remount,rw,bind /run/sandpit && echo evil > /run/sandpit/ca.crt'",
    ] {
        let (code, out) = exec(s, attack).await;
        assert_ne!(code, 0, "`{attack}` succeeded: {out}");
    }
    let inside = ok(s, "ls -A /run/sandpit; cat /run/sandpit/ca.crt").await;
    assert_eq!(inside, "ca.crt\negress.sock\nlater\noriginal", "{inside}");
    assert_eq!(
        std::fs::read_to_string(run.join("ca.crt")).unwrap(),
        "original\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "egress.sock", "later"]);
    let mounts = ok(s, "grep ' /run/sandpit ' /proc/self/mountinfo").await;
    assert!(mounts.contains(" ro,"), "{mounts}");

    // The egress bridge's socket leads to the spec's endpoint.
    let accept = tokio::spawn(async move {
        let mut conn = from_sandbox.recv().await.unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).await.unwrap();
        got
    });
    ok(
        s,
        "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('/run/sandpit/egress.sock'); s.sendall(b'through')\"",
    )
    .await;
    assert_eq!(accept.await.unwrap(), "through");

    // Proxy env without a CA bundle; DNS points at slirp's forwarder.
    let vars = ok(
        s,
        "echo $HTTP_PROXY $https_proxy $NO_PROXY; echo ${SSL_CERT_FILE:-none}",
    )
    .await;
    assert_eq!(
        vars,
        "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1\nnone"
    );
    assert_eq!(ok(s, "cat /etc/resolv.conf").await, "nameserver 10.0.2.3");
    // No process of the sandbox can ever hold CAP_NET_ADMIN (bit 12), so the firewall the host
    // loads into its network namespace stays.
    let bnd = ok(s, "grep CapBnd /proc/self/status | cut -f2").await;
    let bnd = u64::from_str_radix(&bnd, 16).unwrap();
    assert_eq!(bnd & (1 << 12), 0, "CapBnd {bnd:#x}");

    // With a CA bundle in the run dir at start, the CA variables are set.
    env.driver.stop(&id).await.unwrap();
    spec.run_files.push(RunFile {
        name: "ca-bundle.crt".into(),
        contents: b"bundle\n".to_vec(),
    });
    let started = env.start(&spec).await;
    let vars = ok(
        &started,
        "echo $SSL_CERT_FILE $REQUESTS_CA_BUNDLE $CURL_CA_BUNDLE $GIT_SSL_CAINFO $PIP_CERT $NODE_EXTRA_CA_CERTS",
    )
    .await;
    let b = "/run/sandpit/ca-bundle.crt";
    assert_eq!(vars, format!("{b} {b} {b} {b} {b} /run/sandpit/ca.crt"));
    env.driver.destroy(&id).await.unwrap();
}

fn have(bin: &str) -> bool {
    std::path::Path::new(bin).exists()
}

/// Tries to send a raw TCP SYN for `dst:port` straight onto the tap device with AF_PACKET
/// (what sandbox root's CAP_NET_RAW would allow), bypassing the `output` hook. Prints
/// `refused:<errno>` when the socket cannot be made (seccomp refuses the family).
fn raw_syn_cmd(dst: Ipv4Addr, port: u16, bypass: bool) -> String {
    let bypass = if bypass { "True" } else { "False" };
    let script = format!(
        r#"import socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = socket.inet_aton("10.0.2.100"), socket.inet_aton("{dst}")
tcp = struct.pack("!HHIIBBHHH", 40000, {port}, 1, 0, 5 << 4, 2, 65535, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
except OSError as e:
    print("refused:%d" % e.errno)
    raise SystemExit(0)
s.bind(("tap0", 0))
if {bypass}: s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
try:
    s.send(bytes.fromhex("52550a000202525500000264") + b"\x08\x00" + ip + tcp)
    print("sent")
except OSError:
    print("dropped")
"#
    );
    python(&script)
}

fn policy(mode: NetworkMode, allow: &[String]) -> EgressPolicy {
    let allow = allow.iter().map(|entry| entry.parse().unwrap()).collect();
    EgressPolicy::new(mode, allow)
}

/// Changes a running sandbox's policy, which must succeed.
async fn set_policy(env: &Env, id: &str, mode: NetworkMode, allow: &[String]) {
    env.driver
        .set_network(id, &policy(mode, allow))
        .await
        .unwrap();
}

fn interfaces_cmd() -> &'static str {
    "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_full_mode_blocks_host_and_private_unless_allowed() {
    let Some(env) = Env::new() else { return };
    let (slirp, nft) = (&env.driver.config().slirp4netns, &env.driver.config().nft);
    if !have(&slirp.to_string_lossy()) || !have(&nft.to_string_lossy()) {
        eprintln!("\n!!! SKIPPED: needs slirp4netns and nft (scripts/test.sh installs them) !!!\n");
        return;
    }
    let net = TestNet::create().unwrap();
    let outside = count_accepts(net.listen(7001).unwrap());
    // Host-side listeners: loopback and the host end of the veth (a host address).
    let lo_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lo_port = lo_listener.local_addr().unwrap().port();
    let on_loopback = count_accepts(lo_listener);
    let on_host_veth = count_accepts(TcpListener::bind((net.host, 7002)).unwrap());

    let id = unique_id("full");
    let mut spec = env.spec(&id);
    spec.network = policy(NetworkMode::Full, &[]);
    let started = env.start(&spec).await;
    let s = &started;
    assert_eq!(ok(s, interfaces_cmd()).await, "lo tap0");

    // Not allowed: private destination, host loopback (directly and via slirp's gateway), the
    // host's own address.
    for (addr, port) in [
        (net.inner.to_string(), 7001),
        ("10.0.2.2".to_string(), lo_port),
        ("127.0.0.1".to_string(), lo_port),
        (net.host.to_string(), 7002),
    ] {
        assert_eq!(ok(s, &connect_cmd(&addr, port)).await, "refused", "{addr}");
    }
    assert_eq!(outside.load(Ordering::SeqCst), 0);

    // Allowed at run time: the namespace's server is reached; the host end stays refused.
    let allow = vec![net.cidr()];
    let t = std::time::Instant::now();
    set_policy(&env, &id, NetworkMode::Full, &allow).await;
    eprintln!("rules reloaded in {:?}", t.elapsed());
    assert_eq!(ok(s, &connect_cmd(net.inner, 7001)).await, "hello");
    assert_eq!(outside.load(Ordering::SeqCst), 1);
    assert_eq!(ok(s, &connect_cmd(net.host, 7002)).await, "refused");
    // Raw frames cannot be written to the tap device at all: seccomp refuses AF_PACKET
    // sockets (EAFNOSUPPORT = 97). The egress hook on tap0 stays as a second layer.
    for bypass in [false, true] {
        assert_eq!(
            ok(s, &raw_syn_cmd(net.inner, 7001, bypass)).await,
            "refused:97"
        );
    }

    // Allow list emptied again: refused, also for raw frames written to the tap device.
    set_policy(&env, &id, NetworkMode::Full, &[]).await;
    assert_eq!(ok(s, &connect_cmd(net.inner, 7001)).await, "refused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outside.load(Ordering::SeqCst), 1);

    // Sandbox root cannot touch the interfaces or rules (no CAP_NET_ADMIN in its network
    // namespace): taking tap0 down (SIOCSIFFLAGS) is refused with EPERM.
    let down = python(
        "import socket, fcntl, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ntry:\n fcntl.ioctl(s, 0x8914, struct.pack('16sH14s', b'tap0', 0, bytes(14)))\n print('changed')\nexcept OSError as e:\n print(e.errno)\n",
    );
    assert_eq!(ok(s, &down).await, "1");

    // A slirp4netns that died is replaced at the next policy change.
    let slirp_pids = || {
        let out = Command::new("pgrep")
            .args(["-f", &format!("slirp4netns.* {} tap0", started.pid)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|p| p.parse::<i32>().unwrap())
            .collect::<Vec<_>>()
    };
    let pids = slirp_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ok(s, interfaces_cmd()).await, "lo");
    set_policy(&env, &id, NetworkMode::Full, &[]).await;
    assert_eq!(ok(s, interfaces_cmd()).await, "lo tap0");

    // none: slirp4netns goes, only loopback is left.
    set_policy(&env, &id, NetworkMode::None, &[]).await;
    assert_eq!(ok(s, interfaces_cmd()).await, "lo");
    assert_eq!(ok(s, &connect_cmd(net.inner, 7001)).await, "refused");

    // Back to full with the CIDR allowed, then stop: slirp4netns is gone with the sandbox.
    let t = std::time::Instant::now();
    set_policy(&env, &id, NetworkMode::Full, &allow).await;
    eprintln!("none -> full (rules + slirp4netns) in {:?}", t.elapsed());
    assert_eq!(ok(s, &connect_cmd(net.inner, 7001)).await, "hello");
    env.driver.stop(&id).await.unwrap();
    assert!(slirp_pids().is_empty(), "slirp4netns left running");

    assert_eq!(
        on_loopback.load(Ordering::SeqCst),
        0,
        "host loopback reached"
    );
    assert_eq!(
        on_host_veth.load(Ordering::SeqCst),
        0,
        "host address reached"
    );
    assert_eq!(outside.load(Ordering::SeqCst), 2);
    env.driver.destroy(&id).await.unwrap();
}
