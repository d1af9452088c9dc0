//! Prepared cells (TypeScript and the REPL rewrite) behave as written when run in Node.

use sandpit_interpreter::{PrepareError, prepare_javascript};

use super::harness::{Step, run};

#[test]
fn typescript_enums_run() {
    let t = run(vec![Step::ts(
        "enum Color { Red, Green = 5, Blue }\nenum Dir { Up = 'UP', Down = 'DOWN' }\nconst c: Color = Color.Blue;\n[Color[c], c, Dir.Down, Color.Red]",
    )]);
    t.ok(0);
    assert_eq!(t.text(0), "[ 'Blue', 6, 'DOWN', 0 ]");
}

#[test]
fn typescript_interfaces_generics_and_classes_run() {
    let t = run(vec![
        Step::ts(
            "interface Box<T> { value: T; label?: string }\n\
             type Pair<A, B> = [A, B];\n\
             function wrap<T>(value: T): Box<T> { return { value }; }\n\
             class Counter<T extends number> {\n  constructor(private start: T, public readonly step: number = 1) {}\n  next(): number { return this.start + this.step; }\n}\n\
             const b = wrap<number>(41);\n\
             const p: Pair<string, number> = ['n', b.value as number];\n\
             [new Counter(b.value).next(), p, <string>'cast']",
        ),
        // Declarations of one TypeScript cell are visible in the next.
        Step::ts("const again: Box<string> = wrap('x'); again.value + new Counter(1, 2).next()"),
    ]);
    t.ok(0).ok(1);
    assert_eq!(t.text(0), "[ 42, [ 'n', 41 ], 'cast' ]");
    assert_eq!(t.text(1), "'x3'");
}

#[test]
fn typescript_with_top_level_await() {
    let t = run(vec![Step::ts(
        "const r: number = await new Promise<number>((resolve) => setTimeout(() => resolve(3), 10));\nr * 2",
    )]);
    t.ok(0);
    assert_eq!(t.text(0), "6");
}

#[test]
fn top_level_declarations_persist_and_can_be_redeclared() {
    let t = run(vec![
        Step::js(
            "const x = 1; let y = 'a'; class K { v() { return 'k1' } }; function f() { return 'f1' }\nx",
        ),
        Step::js(
            "const x = 2; let y; class K { v() { return 'k2' } }; function f() { return 'f2' }\n[x, y, new K().v(), f()]",
        ),
        Step::js("const { a, b: [c = 3] } = { a: 1, b: [] }; [a, c, x]"),
    ]);
    t.ok(0).ok(1).ok(2);
    assert_eq!(t.text(0), "1");
    assert_eq!(t.text(1), "[ 2, undefined, 'k2', 'f2' ]");
    assert_eq!(t.text(2), "[ 1, 3, 2 ]");
}

#[test]
fn top_level_await_returns_the_last_expression_and_keeps_state() {
    let t = run(vec![
        Step::js(
            "const v = await Promise.resolve(20);\nfunction g() { return v * 2 }\nfor (var i = 0; i < 3; i++) {}\nv + 1",
        ),
        Step::js("[v, g(), i]"),
        Step::js("await null; const w = 5"),
    ]);
    t.ok(0).ok(1).ok(2);
    assert_eq!(t.text(0), "21");
    assert_eq!(t.text(1), "[ 20, 40, 3 ]");
    // A cell that ends with a declaration has no result.
    assert!(t.of_type(2, "result").is_empty(), "{:?}", t.steps[2]);
}

#[test]
fn cell_ending_in_a_statement_has_no_result_even_after_an_expression() {
    let t = run(vec![
        Step::js("1 + 1; const z = 3"),
        Step::js("if (true) { 5 }"),
    ]);
    t.ok(0).ok(1);
    assert!(t.of_type(0, "result").is_empty(), "{:?}", t.steps[0]);
    assert!(t.of_type(1, "result").is_empty(), "{:?}", t.steps[1]);
}

#[test]
fn imports_become_requires() {
    let t = run(vec![Step::js(
        "import path from 'node:path';\nimport { basename as base } from 'node:path';\nimport * as os from 'node:os';\n[path.extname('a.txt'), base('/x/y.js'), typeof os.hostname]",
    )]);
    t.ok(0);
    assert_eq!(t.text(0), "[ '.txt', 'y.js', 'function' ]");
}

#[test]
fn runtime_errors_point_at_the_users_line() {
    let t = run(vec![
        Step::js("let a = 1;\n\nnull.boom"),
        Step::js("await 0;\nconst q = 1;\nundefinedThing()"),
    ]);
    for (i, line) in [(0, ":3:"), (1, ":3:")] {
        let errors = t.of_type(i, "error");
        assert_eq!(errors.len(), 1, "{:?}", t.steps[i]);
        let traceback = errors[0]["traceback"].to_string();
        assert!(
            traceback.contains(&format!("<cell-{}>{line}", i + 1)),
            "step {i}: {traceback}"
        );
    }
}

fn syntax_error(source: &str, typescript: bool) -> (String, Option<u32>, Option<u32>) {
    match prepare_javascript(source, typescript) {
        Err(PrepareError::Syntax {
            message,
            line,
            column,
        }) => (message, line, column),
        Ok(prepared) => panic!("{source:?} prepared: {}", prepared.code),
    }
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let (message, line, column) = syntax_error("const a = 1;\nconst b = (2;\n", false);
    assert!(!message.is_empty());
    assert_eq!(line, Some(2));
    assert!(column.is_some_and(|c| c > 1), "{column:?}");

    // TypeScript: positions are those of the TypeScript source.
    let (_, line, _) = syntax_error(
        "interface A { x: number }\nlet v: A = { x: 1 };\nlet w: = 3;",
        true,
    );
    assert_eq!(line, Some(3));

    let error = prepare_javascript("let = ;", false).expect_err("syntax error");
    assert!(error.to_string().starts_with("SyntaxError: "), "{error}");
}

/// The `<cell-1>:line:column` of the first frame of the error of step `i`.
fn first_position(t: &super::harness::Transcript, i: usize) -> String {
    let errors = t.of_type(i, "error");
    assert_eq!(errors.len(), 1, "{:?}", t.steps[i]);
    let traceback = errors[0]["traceback"].as_array().expect("traceback");
    let frame = traceback
        .iter()
        .filter_map(|l| l.as_str())
        .find(|l| l.contains("<cell-"))
        .unwrap_or_else(|| panic!("no cell frame: {traceback:?}"));
    let start = frame.find("<cell-").expect("cell");
    frame[start..].trim_end_matches(')').to_owned()
}

#[test]
fn typescript_errors_point_at_the_typescript_lines_and_columns() {
    let t = run(vec![
        Step::ts(
            "interface P { x: number }\n\ntype Q = string;\nfunction f(p: P): number {\n    throw new Error('ts boom');\n}\nconst q: Q = 'q';\nf({ x: 1 });",
        ),
        Step::ts(
            "enum E { A }\nconst v: number = await Promise.resolve(E.A);\n\n  undefinedFn(v as number)",
        ),
    ]);
    assert_eq!(first_position(&t, 0), "<cell-1>:5:11");
    assert_eq!(first_position(&t, 1), "<cell-2>:4:3");
}

#[test]
fn javascript_columns_on_line_one_ignore_the_rewrite_prefix() {
    let t = run(vec![
        Step::js("const a = 1; let b; missing(a)"),
        Step::js("await 0; const x = 1, {y} = {y: 2};\nlet c; class K {}; missing(x)"),
        Step::ts("let n: number = 1; const s: string = 'a'; missing(n)"),
    ]);
    assert_eq!(first_position(&t, 0), "<cell-1>:1:21");
    assert_eq!(first_position(&t, 1), "<cell-2>:2:20");
    assert_eq!(first_position(&t, 2), "<cell-3>:1:43");
}

#[test]
fn a_cell_of_braces_is_an_object_literal_when_it_can_be() {
    let t = run(vec![
        Step::js("{ a: 1, b: [2] }"),
        Step::ts("{ n: 1 as number };"),
        Step::js("{ let inner = 5; globalThis.fromBlock = inner }"),
        Step::js("fromBlock"),
    ]);
    for i in 0..4 {
        t.ok(i);
    }
    assert_eq!(t.text(0), "{ a: 1, b: [ 2 ] }");
    assert_eq!(t.text(1), "{ n: 1 }");
    assert_eq!(t.text(3), "5");
}

#[test]
fn typescript_module_features_run() {
    let t = run(vec![Step::ts(
        "import type { Foo } from './foo';\n\
             export type Bar = { x: number };\n\
             const enum Level { Low = 1, High = Low * 10 }\n\
             namespace Geometry { export const pi = 3; export function area(r: number) { return pi * r * r } }\n\
             abstract class Shape { abstract area(): number; describe(): string { return `${this.constructor.name}:${this.area()}` } }\n\
             class Circle extends Shape implements Bar { x = 0; #secret = 1; constructor(private r: number) { super() } area() { return Geometry.area(this.r) + this.#secret } }\n\
             const cfg = { mode: 'a' } satisfies Record<string, string>;\n\
             declare const injected: number;\n\
             function first<T>(xs: readonly T[]): T | undefined { return xs?.[0] }\n\
             let maybe: string | null = null;\n\
             [Level.High, new Circle(2).describe(), cfg.mode, first<number>([7, 8]), maybe ?? 'default']",
    )]);
    t.ok(0);
    assert_eq!(t.text(0), "[ 10, 'Circle:13', 'a', 7, 'default' ]");
}

#[test]
fn sloppy_mode_code_runs() {
    let t = run(vec![Step::js(
        "var o = { a: 1 }; var r;\nwith (o) { r = a + 1 }\n[r, 010, typeof undeclaredName]",
    )]);
    t.ok(0);
    assert_eq!(t.text(0), "[ 2, 8, 'undefined' ]");
}

/// Cells with the syntax a REPL user writes, and the text of their result (`None`: no result).
const CORPUS: &[(&str, Option<&str>)] = &[
    ("let a = 1, b = a + 1; b", Some("2")),
    (
        "const {x = 1, ...rest} = {y: 2}; [x, rest]",
        Some("[ 1, { y: 2 } ]"),
    ),
    (
        "const [p, , q = 3, ...others] = [1, 2, undefined, 4]; [p, q, others]",
        Some("[ 1, 3, [ 4 ] ]"),
    ),
    (
        "class A { static s = 1; #p = 2; get p() { return this.#p } }; new A().p + A.s",
        Some("3"),
    ),
    (
        "async function* gen() { yield 1; yield 2 }\nconst out = [];\nfor await (const v of gen()) out.push(v);\nout",
        Some("[ 1, 2 ]"),
    ),
    (
        "outer: for (var i = 0; i < 3; i++) { continue outer }\ni",
        Some("3"),
    ),
    (
        "await 0; outer2: for (var j = 0; j < 2; j++) { continue outer2 }\nj",
        Some("2"),
    ),
    (
        "var f = function named() {}, g = () => {}; typeof f + typeof g",
        Some("'functionfunction'"),
    ),
    ("switch (1) { case 1: var sw = 'one' }\nsw", Some("'one'")),
    (
        "await 0; try { throw 1 } catch { var caught = true }\ncaught",
        Some("true"),
    ),
    (
        "if (true) function decl() { return 'annex b' }\ndecl()",
        Some("'annex b'"),
    ),
    ("const re = /a\\/b/g; 'a/b'.replace(re, 'x')", Some("'x'")),
    ("`template ${1 + 1}`", Some("'template 2'")),
    ("(function () { return 1 })()", Some("1")),
    ("let { a: { b: deep } } = { a: { b: 4 } }; deep", Some("4")),
    (
        "await Promise.all([1, 2].map(async (n) => n * 2))",
        Some("[ 2, 4 ]"),
    ),
    (
        "const o = { async m() { await 1; return 2 } }; await o.m()",
        Some("2"),
    ),
    ("await 0; do { var k = 1 } while (false); k", Some("1")),
    (
        "await 0; for (const key in { a: 1 }) { var lastKey = key }\nlastKey",
        Some("'a'"),
    ),
    ("export const e1 = 5; e1", Some("5")),
    ("let u; u", None),
    (
        "const fn = async () => { const inner = await 1; return inner }; await fn()",
        Some("1"),
    ),
    ("class B extends Array {}; B.from([1]).length", Some("1")),
    ("const café = 'é'; café", Some("'é'")),
    ("implicitGlobal = 1; implicitGlobal", Some("1")),
    ("void 0", None),
    ("// just a comment", None),
    ("", None),
    (
        "await 1; var n1 = 1, n2; [n1, n2]",
        Some("[ 1, undefined ]"),
    ),
    (
        "const { default: d } = await import('node:path'); typeof d.join",
        Some("'function'"),
    ),
    ("await 0\nconst [first] = [9]\nfirst", Some("9")),
    ("const obj = {a: 1}\n;[obj.a]", Some("[ 1 ]")),
];

/// Runs every cell of `corpus` in one context and checks its result.
fn assert_corpus(corpus: &[(&str, Option<&str>)], typescript: bool) {
    let t = run(corpus
        .iter()
        .map(|(source, _)| Step::cell(source, typescript))
        .collect());
    for (i, (source, expected)) in corpus.iter().enumerate() {
        assert!(
            t.of_type(i, "error").is_empty(),
            "{source:?}: {:?}",
            t.steps[i]
        );
        match expected {
            Some(text) => assert_eq!(t.text(i), *text, "{source:?}"),
            None => assert!(
                t.of_type(i, "result").is_empty(),
                "{source:?}: {:?}",
                t.steps[i]
            ),
        }
    }
}

#[test]
fn repl_corpus_runs_as_written() {
    assert_corpus(CORPUS, false);
}

const TS_CORPUS: &[(&str, Option<&str>)] = &[
    (
        "const id = <T,>(x: T): T => x; id<string>('g')",
        Some("'g'"),
    ),
    ("let z!: number; z = 3; z", Some("3")),
    ("const tuple = [1, 'a'] as const; tuple.length", Some("2")),
    (
        "const maybe: { v?: number } = { v: 2 }; maybe.v! + 1",
        Some("3"),
    ),
    (
        "function over(x: string): string;\nfunction over(x: number): number;\nfunction over(x: any) { return x }\nover(5)",
        Some("5"),
    ),
    (
        "type Keys = keyof { a: 1; b: 2 }; const k: Keys = 'b'; k",
        Some("'b'"),
    ),
    (
        "interface Dict { [key: string]: number }\nconst dict: Dict = { one: 1 }; dict.one",
        Some("1"),
    ),
    ("enum Color { Red }\nColor.Red", Some("0")),
    (
        "enum Color { Blue = 2 }\n[Color.Red, Color.Blue]",
        Some("[ 0, 2 ]"),
    ),
    (
        "declare module 'virtual' { export const v: number }\nconst fine: number = 1; fine",
        Some("1"),
    ),
    (
        "class Pt { constructor(public x = 1, protected y?: number) {} }\nnew Pt().x",
        Some("1"),
    ),
    ("const big: bigint = 10n; big * 2n", Some("20n")),
    (
        "const u: unknown = 'str'; (u as string).toUpperCase()",
        Some("'STR'"),
    ),
    ("let lbl: `pre-${string}` = 'pre-x'; lbl", Some("'pre-x'")),
    (
        "function tag(target: any) { target.tagged = true }\nfunction twice(_t: any, _k: string, d: PropertyDescriptor) { const f = d.value; d.value = function (this: any, ...a: any[]) { return 2 * f.apply(this, a) } }\n@tag class Tagged { @twice one() { return 1 } }\n[(Tagged as any).tagged, new Tagged().one()]",
        Some("[ true, 2 ]"),
    ),
    (
        "await new Promise<void>((r) => setTimeout(r, 1)); const done: boolean = true; done",
        Some("true"),
    ),
];

#[test]
fn typescript_corpus_runs_as_written() {
    assert_corpus(TS_CORPUS, true);
}
