//! `sandpit shell` against a real server: piped input, and a real terminal made by `script`
//! (raw mode, initial size, resize on SIGWINCH, terminal restored, exit code).

use std::process::{Command, Stdio};

use super::support::{Served, images_dir_or_skip};

fn stdout(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

#[test]
fn serial_shell_against_real_server() {
    let Some(images) = images_dir_or_skip("serial_shell_against_real_server") else {
        return;
    };
    let served = Served::start(&images);

    // Piped keystrokes, no local terminal: output comes back, the exit code is the shell's.
    let assert = served
        .cli()
        .args(["shell", "term", "--create"])
        .write_stdin("echo $((6*7)); tty\nexit 3\n")
        .assert()
        .code(3);
    let out = stdout(&assert);
    assert!(out.contains("42"), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");

    // A named session keeps its terminal: a second attach sees the first one's output.
    served
        .cli()
        .args(["shell", "term", "--session", "keep"])
        .write_stdin("echo $((1000+234))\n")
        .timeout(std::time::Duration::from_secs(10))
        .assert()
        .failure(); // the command never exits: cut off by the timeout
    let assert = served
        .cli()
        .args(["shell", "term", "--session", "keep"])
        .write_stdin("exit 4\n")
        .assert()
        .code(4);
    assert!(stdout(&assert).contains("1234"), "{}", stdout(&assert));

    // Under a real terminal: size at start, a resize while attached, raw mode undone at exit.
    let sandpit = env!("CARGO_BIN_EXE_sandpit");
    let script = format!(
        "stty cols 100 rows 30; (sleep 10; stty cols 120 rows 40 </dev/tty) & \
         {sandpit} shell term; echo \"rc=$?\"; wait; stty -a"
    );
    let output = Command::new("script")
        .args(["-qec", &script, "/dev/null"])
        .env("SANDPIT_URL", &served.url)
        .env("SANDPIT_KEY", &served.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"stty size; sleep 16; stty size\nexit 5\n")?;
            // Keep stdin open until the shell is done (EOF would end `script`).
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(40));
                drop(stdin);
            });
            child.wait_with_output()
        })
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    // Lines may start with bash's terminal escapes (bracketed paste off).
    let line = |text: &str| out.lines().any(|l| l.ends_with(text));
    assert!(line("30 100"), "{out}");
    assert!(line("40 120"), "{out}");
    let after = out.split("rc=5").nth(1).unwrap_or_else(|| panic!("{out}"));
    assert!(
        after.contains(" icanon") && after.contains(" echo "),
        "{after}"
    );
    assert!(!after.contains("-icanon"), "{after}");
}
