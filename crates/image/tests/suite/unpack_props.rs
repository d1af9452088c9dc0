//! Property tests of layer unpacking: whatever mix of `..` names, absolute paths, symlink
//! chains and hard links a generated archive holds, importing it writes nothing outside the
//! image. Each case is a real import into a scratch store that has a sentinel directory
//! (`outside/`, holding `secret`) beside it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::{E, Env, docker_save, layer};

/// Stands for the sentinel directory's absolute path, known only once the scratch store exists.
const OUT: &str = "@OUT";
/// Every name a generated path component can have (besides `.`, `..` and empty). A resolver
/// that treated an absolute target as a host path would create them at the host's root, so
/// each case checks they stay absent there.
const NAMES: [&str; 4] = ["sandpit-prop-a", "sandpit-prop-b", "outside", "secret"];

/// One generated layer entry, with names and targets still holding [`OUT`].
#[derive(Debug, Clone)]
enum Gen {
    File(String, Vec<u8>),
    Dir(String),
    Symlink(String, String),
    Hard(String, String),
}

/// One path component; `dotdot` weighs `..` against the 14 of the others.
fn component(dotdot: u32) -> BoxedStrategy<&'static str> {
    let others = prop_oneof![
        4 => Just(NAMES[0]),
        3 => Just(NAMES[1]),
        1 => Just("."),
        1 => Just(""),
        3 => Just(NAMES[2]),
        2 => Just(NAMES[3]),
    ];
    if dotdot == 0 {
        others.boxed()
    } else {
        prop_oneof![14 => others, dotdot => Just("..")].boxed()
    }
}

/// A path of 1..=4 components, relative, absolute, or below the sentinel's absolute path.
fn path(dotdot: u32) -> impl Strategy<Value = String> {
    (
        prop_oneof![3 => Just(""), 2 => Just("/"), 2 => Just("@OUT/")],
        prop::collection::vec(component(dotdot), 1..=4),
    )
        .prop_map(|(prefix, parts)| format!("{prefix}{}", parts.join("/")))
}

/// A relative path without `..`: what an accepted hard link names.
fn inside_path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(0), 1..=4).prop_map(|parts| parts.join("/"))
}

/// A symlink or hard-link target: a path as above, or a chain of `..` climbing out.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => path(3),
        2 => (1usize..=8, prop::collection::vec(component(0), 0..=2))
            .prop_map(|(ups, rest)| {
                let mut parts = vec![".."; ups];
                parts.extend(rest);
                parts.join("/")
            }),
        1 => Just(OUT.to_owned()),
    ]
}

/// An entry's own name: `..` in one rejects the whole archive, so it is rare.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![19 => path(0), 1 => path(3)]
}

fn entry() -> impl Strategy<Value = Gen> {
    prop_oneof![
        3 => (name(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(p, d)| Gen::File(p, d)),
        2 => name().prop_map(Gen::Dir),
        3 => (name(), target()).prop_map(|(p, t)| Gen::Symlink(p, t)),
        // Mostly targets the unpacker accepts (which may still lead through symlinks), some not.
        2 => (name(), prop_oneof![3 => inside_path(), 1 => target()])
            .prop_map(|(p, t)| Gen::Hard(p, t)),
    ]
}

fn layers() -> impl Strategy<Value = Vec<Vec<Gen>>> {
    prop::collection::vec(prop::collection::vec(entry(), 1..=6), 1..=3)
}

/// The layer's tar bytes, with [`OUT`] replaced by `out` (the sentinel's absolute path).
fn build(entries: &[Gen], out: &str) -> Vec<u8> {
    let real = |s: &str| s.replace(OUT, out);
    let owned: Vec<Gen> = entries
        .iter()
        .map(|e| match e {
            Gen::File(p, d) => Gen::File(real(p), d.clone()),
            Gen::Dir(p) => Gen::Dir(real(p)),
            Gen::Symlink(p, t) => Gen::Symlink(real(p), real(t)),
            Gen::Hard(p, t) => Gen::Hard(real(p), real(t)),
        })
        .collect();
    let borrowed: Vec<E> = owned
        .iter()
        .map(|e| match e {
            Gen::File(p, d) => E::File(p, d),
            Gen::Dir(p) => E::Dir(p),
            Gen::Symlink(p, t) => E::Symlink(p, t),
            Gen::Hard(p, t) => E::Hard(p, t),
        })
        .collect();
    layer(&borrowed)
}

fn host_names_absent() -> bool {
    NAMES
        .iter()
        .all(|n| fs::symlink_metadata(Path::new("/").join(n)).is_err())
}

proptest! {
    #![proptest_config(Config { cases: 128, failure_persistence: None, ..Config::default() })]

    #[test]
    fn no_generated_archive_writes_outside_the_image(layers in layers()) {
        prop_assume!(host_names_absent());
        let env = Env::new();
        let sentinel = env.sentinel();
        let secret = sentinel.join("secret");
        fs::write(&secret, b"secret").unwrap();
        let before = fs::metadata(&secret).unwrap();
        let out = sentinel.to_str().unwrap();
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| build(l, out)).collect();

        let result = env.import("x", &docker_save(&tars));

        // The sentinel: same single file, same content, no new hard link to it.
        let names: Vec<_> = fs::read_dir(&sentinel)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        prop_assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        prop_assert_eq!(fs::read(&secret).unwrap(), b"secret".to_vec());
        let after = fs::metadata(&secret).unwrap();
        prop_assert_eq!(after.nlink(), 1, "a hard link to the sentinel was made");
        prop_assert_eq!(after.mode(), before.mode());
        prop_assert_eq!(after.mtime(), before.mtime());
        // Nothing else appeared beside the store, and nothing at the host's root.
        let stray = env.stray_paths();
        match &result {
            Ok(_) => prop_assert_eq!(stray, ["images", "images/x", "outside", "outside/secret"]),
            Err(_) => {
                prop_assert_eq!(stray, ["images", "outside", "outside/secret"]);
                prop_assert!(env.store.list().unwrap().is_empty());
            }
        }
        prop_assert!(host_names_absent(), "an absolute path escaped to the host's root");
    }
}
