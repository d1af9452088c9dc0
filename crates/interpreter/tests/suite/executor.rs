//! The Node executor over its protocol: state, live output, results, errors, interrupts,
//! configure.

use serde_json::json;

use super::harness::{Step, run};

#[test]
fn state_and_globals_persist_across_runs() {
    let t = run(vec![
        Step::js("globalThis.counter = 1; counter += 1"),
        Step::js(
            "[counter, typeof require, typeof process, typeof Buffer, typeof setTimeout, global === globalThis]",
        ),
        Step::js(
            "require('node:crypto').createHash('sha256').update('a').digest('hex').slice(0, 8)",
        ),
    ]);
    t.ok(0).ok(1).ok(2);
    assert_eq!(t.text(0), "2");
    assert_eq!(
        t.text(1),
        "[ 2, 'function', 'object', 'function', 'function', true ]"
    );
    assert_eq!(t.text(2), "'ca978112'");
    let counts: Vec<_> = (0..3)
        .map(|i| t.of_type(i, "done")[0]["execution_count"].clone())
        .collect();
    assert_eq!(counts, vec![json!(1), json!(2), json!(3)]);
}

#[test]
fn output_is_streamed_live_and_in_order() {
    let t = run(vec![
        Step::js(
            "console.log('first'); await new Promise((r) => setTimeout(r, 500)); console.log('second'); 'end'",
        ),
        Step::js(
            "console.log('a'); console.error('b'); process.stdout.write('c\\n'); console.info('d', { e: 1 })",
        ),
    ]);
    t.ok(0).ok(1);
    let events = &t.steps[0];
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["stdout", "stdout", "result", "done"]);
    assert_eq!(events[0]["text"], "first\n");
    let first = events[0]["t"].as_u64().unwrap_or(u64::MAX);
    let done = events[3]["t"].as_u64().unwrap_or(0);
    // The first line arrived well before the run ended.
    assert!(
        first + 400 <= done,
        "first at {first} ms, done at {done} ms"
    );

    let order: Vec<(String, String)> = t.steps[1]
        .iter()
        .filter(|e| e["type"] == "stdout" || e["type"] == "stderr")
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("stdout", "a\n"),
        ("stderr", "b\n"),
        ("stdout", "c\n"),
        ("stdout", "d { e: 1 }\n"),
    ];
    assert_eq!(
        order,
        expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
    );
    assert_eq!(t.stdout_of(0), "first\nsecond\n");
    assert!(
        t.stdout.is_empty(),
        "nothing leaks to the raw stdout pipe: {:?}",
        t.stdout
    );
    assert!(
        t.stderr.is_empty(),
        "nothing leaks to the raw stderr pipe: {:?}",
        t.stderr
    );
}

#[test]
fn results_carry_json_for_plain_data_and_text_for_the_rest() {
    let t = run(vec![
        Step::js("({ name: 'x', list: [1, 2, { deep: true }], nothing: null })"),
        Step::js("'a string'"),
        Step::js("const cyclic = { me: null }; cyclic.me = cyclic; cyclic"),
        Step::js("new Map([[1, 2]])"),
        Step::js("undefined"),
        Step::js("'x'.repeat(5 * 1024 * 1024)"),
        Step::js("10n ** 20n"),
    ]);
    for i in 0..7 {
        t.ok(i);
    }
    let object = t.of_type(0, "result")[0];
    assert_eq!(
        object["data"]["application/json"],
        json!({"name": "x", "list": [1, 2, {"deep": true}], "nothing": null})
    );
    assert!(
        object["data"]["text/plain"]
            .as_str()
            .is_some_and(|s| s.contains("deep: true"))
    );
    assert_eq!(t.text(1), "'a string'");
    assert!(
        t.of_type(2, "result")[0]["data"]
            .get("application/json")
            .is_none()
    );
    assert!(t.text(2).contains("[Circular *1]"), "{}", t.text(2));
    assert_eq!(t.text(3), "Map(1) { 1 => 2 }");
    assert!(
        t.of_type(3, "result")[0]["data"]
            .get("application/json")
            .is_none()
    );
    assert!(t.of_type(4, "result").is_empty());
    assert_eq!(t.text(5).len(), 5 * 1024 * 1024 + 2);
    assert_eq!(t.text(6), "100000000000000000000n");
}

#[test]
fn errors_have_name_message_and_user_stack() {
    let t = run(vec![
        Step::js("function inner() {\n  throw new TypeError('bad thing');\n}\ninner()"),
        Step::js("throw 42"),
        Step::js("await Promise.reject(new RangeError('async bad'))"),
        Step::js("'still alive'"),
    ]);
    let error = t.of_type(0, "error")[0];
    assert_eq!(error["ename"], "TypeError");
    assert_eq!(error["evalue"], "bad thing");
    let traceback: Vec<&str> = error["traceback"]
        .as_array()
        .expect("traceback")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(traceback[0], "TypeError: bad thing");
    assert!(
        traceback
            .iter()
            .any(|l| l.contains("at inner (<cell-1>:2:")),
        "{traceback:?}"
    );
    assert!(
        !traceback
            .iter()
            .any(|l| l.contains("node:") || l.contains("node.js")),
        "internal frames are hidden: {traceback:?}"
    );
    assert_eq!(t.of_type(0, "done").len(), 1, "done follows an error");

    let thrown = t.of_type(1, "error")[0];
    assert_eq!(thrown["ename"], "Error");
    assert_eq!(thrown["evalue"], "Uncaught 42");

    let rejected = t.of_type(2, "error")[0];
    assert_eq!(rejected["ename"], "RangeError");
    assert_eq!(rejected["evalue"], "async bad");
    t.ok(3);
    assert_eq!(t.text(3), "'still alive'");
}

#[test]
fn sigint_interrupts_busy_and_awaiting_runs() {
    let t = run(vec![
        Step::js("const kept = 'state'"),
        Step::js("while (true) {}").interrupt_after(300),
        Step::js("await new Promise(() => {})").interrupt_after(300),
        Step::js("kept"),
    ]);
    for i in [1, 2] {
        let errors = t.of_type(i, "error");
        assert_eq!(errors.len(), 1, "step {i}: {:?}", t.steps[i]);
        assert!(
            errors[0]["evalue"]
                .as_str()
                .is_some_and(|m| m.contains("interrupted")),
            "{:?}",
            errors[0]
        );
        let done = t.of_type(i, "done")[0]["t"].as_u64().unwrap_or(u64::MAX);
        assert!((250..3000).contains(&done), "step {i} done at {done} ms");
    }
    t.ok(3);
    assert_eq!(t.text(3), "'state'");
}

#[test]
fn configure_sets_cwd_env_and_require_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("local.js"), "module.exports = 'from cwd';").expect("write");
    std::fs::write(dir.path().join("esm.mjs"), "export const answer = 42;").expect("write");
    let cwd = dir.path().to_str().expect("utf-8 path").to_owned();
    let t = run(vec![
        Step::raw(json!({"op": "configure", "cwd": cwd, "env": {"SANDPIT_TEST_VAR": "v1"}})),
        Step::js("[process.cwd(), process.env.SANDPIT_TEST_VAR, require('./local.js'), __dirname]"),
        Step::raw(json!({"op": "configure", "cwd": "/nonexistent/dir"})),
        Step::js(
            "const { answer } = await import('./esm.mjs'); const os = await import('node:os'); [answer, typeof os.platform, (await import('./local.js')).default]",
        ),
    ]);
    t.ok(3);
    assert_eq!(t.text(3), "[ 42, 'function', 'from cwd' ]");
    t.ok(0).ok(1);
    assert_eq!(
        t.steps[0].len(),
        1,
        "configure answers done only: {:?}",
        t.steps[0]
    );
    assert_eq!(t.text(1), format!("[ '{cwd}', 'v1', 'from cwd', '{cwd}' ]"));
    assert_eq!(t.of_type(2, "error").len(), 1, "{:?}", t.steps[2]);
    assert_eq!(t.of_type(2, "done").len(), 1);
}

#[test]
fn late_callbacks_and_their_errors_do_not_kill_the_context() {
    let t = run(vec![
        Step::js(
            "setTimeout(() => { throw new Error('late failure') }, 20); Promise.reject(new Error('nobody waits'));",
        ),
        Step::js("await new Promise((r) => setTimeout(r, 200)); 'alive'"),
        Step::raw(json!({"op": "bogus"})),
        Step::js(
            "await new Promise(() => setTimeout(() => { throw new SyntaxError('in callback') }, 10))",
        ),
        Step::js("'next'"),
    ]);
    // A callback that throws while its run awaits ends that run with its error.
    let error = t.of_type(3, "error");
    assert_eq!(error.len(), 1, "{:?}", t.steps[3]);
    assert_eq!(error[0]["ename"], "SyntaxError");
    assert_eq!(error[0]["evalue"], "in callback");
    assert_eq!(t.text(4), "'next'");
    t.ok(0).ok(1);
    assert_eq!(t.text(1), "'alive'");
    let stderr: String = (0..2)
        .flat_map(|i| t.of_type(i, "stderr"))
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(stderr.contains("late failure"), "{stderr:?}");
    assert!(stderr.contains("nobody waits"), "{stderr:?}");
    assert_eq!(t.of_type(2, "error")[0]["ename"], "ProtocolError");
}

#[test]
fn display_sends_rich_results_in_order_with_output() {
    let t = run(vec![Step::js(
        "console.log('before');\n\
         display.html('<b>bold</b>');\n\
         display.png(Buffer.from([0x89, 0x50, 0x4e, 0x47]));\n\
         display({ 'text/markdown': '# title', 'text/plain': 'title' }, { raw: true });\n\
         display.json({ k: [1] });\n\
         display([1, 2]);\n\
         console.log('after');\n\
         'last'",
    )]);
    t.ok(0);
    let kinds: Vec<&str> = t.steps[0]
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "stdout", "result", "result", "result", "result", "result", "stdout", "result", "done"
        ]
    );
    let data: Vec<&serde_json::Value> = t.of_type(0, "result").iter().map(|e| &e["data"]).collect();
    assert_eq!(*data[0], json!({"text/html": "<b>bold</b>"}));
    assert_eq!(*data[1], json!({"image/png": "iVBORw=="}));
    assert_eq!(
        *data[2],
        json!({"text/markdown": "# title", "text/plain": "title"})
    );
    assert_eq!(
        *data[3],
        json!({"application/json": {"k": [1]}, "text/plain": "{ k: [ 1 ] }"})
    );
    assert_eq!(
        *data[4],
        json!({"application/json": [1, 2], "text/plain": "[ 1, 2 ]"})
    );
    assert_eq!(*data[5], json!({"text/plain": "'last'"}));
}

#[test]
fn hostile_values_still_end_with_done() {
    let t = run(vec![
        Step::js("throw { get stack() { throw new Error('no stack for you') } }"),
        Step::js("console.log('lone \\ud800 surrogate'); '\\udfff'"),
        Step::js(
            "new Proxy({}, { ownKeys() { throw new Error('trap') }, getPrototypeOf() { throw new Error('trap') } })",
        ),
        Step::js("'ok'"),
    ]);
    for i in 0..4 {
        assert_eq!(t.of_type(i, "done").len(), 1, "step {i}: {:?}", t.steps[i]);
    }
    assert_eq!(t.of_type(0, "error").len(), 1, "{:?}", t.steps[0]);
    t.ok(1);
    assert_eq!(t.stdout_of(1), "lone \u{fffd} surrogate\n");
    assert_eq!(t.text(3), "'ok'");
}
