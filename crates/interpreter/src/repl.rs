//! The REPL rewrite of one JavaScript cell.
//!
//! A cell runs as a classic script in a persistent `vm` context. To let a later cell see (and
//! re-declare) what an earlier one declared, every top-level declaration becomes an assignment
//! to a `var` hoisted to the start of the script (vars are properties of the context's global
//! object and may be declared again). Cells with top-level `await` run inside an async arrow
//! IIFE that `return`s the last expression statement. The rewrite edits the source text by
//! AST spans, so user code keeps its lines (only line 1 gets a prefix) and error positions
//! still point at the user's lines.

use oxc::allocator::Allocator;
use oxc::ast::ast::{
    ArrowFunctionExpression, AwaitExpression, BindingPattern, Class, Declaration,
    ExportDefaultDeclarationKind, ForInStatement, ForOfStatement, ForStatement, ForStatementInit,
    ForStatementLeft, Function, ImportDeclaration, ImportDeclarationSpecifier, ImportExpression,
    Statement, StaticBlock, VariableDeclaration, VariableDeclarationKind,
};
use oxc::ast_visit::{Visit, walk};
use oxc::parser::Parser;
use oxc::semantic::ScopeFlags;
use oxc::span::{GetSpan, SourceType};

use crate::lines::LineMap;
use crate::{PrepareError, Prepared};

/// The executor's global that loads a module for `import(specifier)`.
const DYNAMIC_IMPORT: &str = "__sandpit_import__";

/// A rewritten cell: the source's lines (plus one at the end), with columns moved.
pub(crate) struct Rewritten {
    pub prepared: Prepared,
    /// Where the columns of the prepared code come from (its lines are the source's).
    pub columns: LineMap,
}

/// Rewrites one JavaScript cell (see the module docs).
pub(crate) fn rewrite(source: &str) -> Result<Rewritten, PrepareError> {
    let allocator = Allocator::default();
    // Module goal: top-level `await` parses, and so do `import`/`export` (rewritten below).
    let mut parsed = Parser::new(&allocator, source, SourceType::mjs()).parse();
    if let Some(error) = PrepareError::from_diagnostics(source, parsed.diagnostics.errors()) {
        // Modules are strict: sloppy-mode code (`with`, octal literals, ...) parses as a
        // classic script, and then has no top-level `await` to worry about.
        let script = Parser::new(&allocator, source, SourceType::script()).parse();
        if script.diagnostics.has_errors() || script.panicked {
            return Err(error);
        }
        parsed = script;
    }
    let program = parsed.program;

    let mut scan = Scan::default();
    scan.visit_program(&program);
    let is_async = scan.has_await;

    let mut rewriter = Rewriter {
        source,
        is_async,
        edits: Edits::default(),
        hoisted: Vec::new(),
        functions: Vec::new(),
    };
    for statement in &program.body {
        rewriter.statement(statement);
    }
    if let Some(hashbang) = &program.hashbang {
        // Only valid at the very start, where the prefix goes.
        rewriter
            .edits
            .replace(hashbang.span.start, hashbang.span.end, String::new());
    }
    // A classic script has no module loader of its own: the executor provides one that
    // resolves from the context's working directory.
    for (start, end) in &scan.dynamic_imports {
        rewriter
            .edits
            .replace(*start, *end, format!("{DYNAMIC_IMPORT}("));
    }
    if is_async {
        // Nested `var`s are function-scoped to the IIFE: hoist them out too.
        for declaration in &scan.nested_vars {
            rewriter.declaration(declaration);
        }
    }

    // Statements the rewrite removes (and empty ones) do not end the cell: TypeScript output
    // of a cell with `import type` ends in `export {};`, say.
    let last_statement = program.body.iter().rev().find(|statement| {
        !matches!(
            statement,
            Statement::EmptyStatement(_)
                | Statement::ExportNamedDeclaration(_)
                | Statement::ExportFromDeclaration(_)
                | Statement::ExportAllDeclaration(_)
        )
    });
    let last_expression = match last_statement {
        Some(Statement::ExpressionStatement(statement)) => Some(statement.expression.span()),
        Some(_) => None,
        // A cell of just `'text'` is a directive prologue to the parser.
        None => program.directives.last().map(|d| d.expression.span),
    };

    let mut prefix = String::new();
    if !rewriter.hoisted.is_empty() {
        prefix.push_str("var ");
        prefix.push_str(&rewriter.hoisted.join(", "));
        prefix.push_str("; ");
    }
    let mut suffix = String::new();
    if is_async {
        prefix.push_str("(async () => { ");
        // Function declarations stay hoisted inside the IIFE; publish them as globals.
        for name in &rewriter.functions {
            prefix.push_str(&format!("this.{name} = {name}; "));
        }
        if let Some(span) = last_expression {
            rewriter.edits.insert(span.start, "return (".into());
            rewriter.edits.insert(span.end, ")".into());
        }
        // On its own line: the cell may end in a line comment.
        suffix.push_str("\n})()");
    } else if last_expression.is_none() {
        // A script's completion value would otherwise be that of an earlier statement.
        suffix.push_str("\n;void 0");
    }

    let (mut code, columns) = rewriter.edits.apply(&prefix, source);
    code.push_str(&suffix);
    Ok(Rewritten {
        prepared: Prepared { code, is_async },
        columns,
    })
}

/// A `var`/`let`/`const` declaration, reduced to what the rewrite needs.
struct DeclarationInfo {
    start: u32,
    kind: VariableDeclarationKind,
    place: Place,
    declarators: Vec<DeclaratorInfo>,
}

struct DeclaratorInfo {
    start: u32,
    end: u32,
    is_pattern: bool,
    has_init: bool,
    names: Vec<String>,
}

/// Where a declaration sits: decides what syntax may replace it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Statement,
    ForInit,
    ForLeft,
}

impl DeclarationInfo {
    fn new(declaration: &VariableDeclaration<'_>, place: Place) -> Self {
        let declarators = declaration
            .declarations
            .iter()
            .map(|declarator| DeclaratorInfo {
                start: declarator.span.start,
                end: declarator.span.end,
                is_pattern: !matches!(declarator.id, BindingPattern::BindingIdentifier(_)),
                has_init: declarator.init.is_some(),
                names: declarator
                    .id
                    .get_binding_identifiers()
                    .iter()
                    .map(|ident| ident.name.as_str().to_owned())
                    .collect(),
            })
            .collect();
        Self {
            start: declaration.span.start,
            kind: declaration.kind,
            place,
            declarators,
        }
    }
}

/// Finds top-level `await` and the `var` declarations nested in top-level statements.
#[derive(Default)]
struct Scan {
    has_await: bool,
    /// Statement nesting; 0 is the cell's top level.
    depth: usize,
    /// Function (and class static block) nesting.
    functions: usize,
    nested_vars: Vec<DeclarationInfo>,
    /// `import(` of every dynamic import, anywhere in the cell.
    dynamic_imports: Vec<(u32, u32)>,
}

impl Scan {
    fn record_var(&mut self, declaration: &VariableDeclaration<'_>, place: Place) {
        // Depth 0 is a top-level statement: the rewriter handles those itself.
        if declaration.kind == VariableDeclarationKind::Var && self.depth > 0 && self.functions == 0
        {
            self.nested_vars
                .push(DeclarationInfo::new(declaration, place));
        }
    }
}

impl<'a> Visit<'a> for Scan {
    fn visit_statement(&mut self, it: &Statement<'a>) {
        self.depth += 1;
        walk::walk_statement(self, it);
        self.depth -= 1;
    }

    fn visit_variable_declaration(&mut self, it: &VariableDeclaration<'a>) {
        // Reached for statements only: for-loop heads are handled below.
        // `visit_statement` already counted this statement itself, hence the `- 1`.
        self.depth -= 1;
        self.record_var(it, Place::Statement);
        self.depth += 1;
        walk::walk_variable_declaration(self, it);
    }

    fn visit_for_statement(&mut self, it: &ForStatement<'a>) {
        if let Some(ForStatementInit::VariableDeclaration(declaration)) = &it.init {
            self.record_var(declaration, Place::ForInit);
            walk::walk_variable_declaration(self, declaration);
        } else if let Some(init) = &it.init {
            self.visit_for_statement_init(init);
        }
        if let Some(test) = &it.test {
            self.visit_expression(test);
        }
        if let Some(update) = &it.update {
            self.visit_expression(update);
        }
        self.visit_statement(&it.body);
    }

    fn visit_for_in_statement(&mut self, it: &ForInStatement<'a>) {
        self.for_left(&it.left);
        self.visit_expression(&it.right);
        self.visit_statement(&it.body);
    }

    fn visit_for_of_statement(&mut self, it: &ForOfStatement<'a>) {
        if it.r#await && self.functions == 0 {
            self.has_await = true;
        }
        self.for_left(&it.left);
        self.visit_expression(&it.right);
        self.visit_statement(&it.body);
    }

    fn visit_await_expression(&mut self, it: &AwaitExpression<'a>) {
        if self.functions == 0 {
            self.has_await = true;
        }
        walk::walk_await_expression(self, it);
    }

    fn visit_import_expression(&mut self, it: &ImportExpression<'a>) {
        self.dynamic_imports
            .push((it.span.start, it.source.span().start));
        walk::walk_import_expression(self, it);
    }

    // Functions and class static blocks have their own scope: neither their `await` nor
    // their `var`s belong to the cell.
    fn visit_function(&mut self, it: &Function<'a>, flags: ScopeFlags) {
        self.functions += 1;
        walk::walk_function(self, it, flags);
        self.functions -= 1;
    }

    fn visit_arrow_function_expression(&mut self, it: &ArrowFunctionExpression<'a>) {
        self.functions += 1;
        walk::walk_arrow_function_expression(self, it);
        self.functions -= 1;
    }

    fn visit_static_block(&mut self, it: &StaticBlock<'a>) {
        self.functions += 1;
        walk::walk_static_block(self, it);
        self.functions -= 1;
    }
}

impl Scan {
    fn for_left(&mut self, left: &ForStatementLeft<'_>) {
        match left {
            ForStatementLeft::VariableDeclaration(declaration) => {
                self.record_var(declaration, Place::ForLeft);
            }
            other => self.visit_for_statement_left(other),
        }
    }
}

struct Rewriter<'s> {
    source: &'s str,
    is_async: bool,
    edits: Edits,
    /// Names declared with a top-level `var` before the cell.
    hoisted: Vec<String>,
    /// Top-level function declarations (published from inside the async IIFE).
    functions: Vec<String>,
}

impl Rewriter<'_> {
    fn hoist(&mut self, name: &str) {
        if !self.hoisted.iter().any(|known| known == name) {
            self.hoisted.push(name.to_owned());
        }
    }

    fn statement(&mut self, statement: &Statement<'_>) {
        match statement {
            Statement::VariableDeclaration(declaration) => {
                self.variables(declaration);
            }
            Statement::FunctionDeclaration(function) => self.function(function),
            Statement::ClassDeclaration(class) => self.class(class),
            Statement::ImportDeclaration(import) => self.import(import),
            Statement::ExportDeclaration(export) => {
                let start = export.declaration.span().start;
                self.edits.replace(export.span.start, start, String::new());
                self.exported(&export.declaration);
            }
            Statement::ExportNamedDeclaration(export) => {
                self.edits
                    .replace(export.span.start, export.span.end, String::new());
            }
            Statement::ExportFromDeclaration(export) => {
                self.edits
                    .replace(export.span.start, export.span.end, String::new());
            }
            Statement::ExportDefaultDeclaration(export) => {
                let start = export.declaration.span().start;
                match &export.declaration {
                    ExportDefaultDeclarationKind::FunctionDeclaration(function)
                        if function.id.is_some() =>
                    {
                        self.edits.replace(export.span.start, start, String::new());
                        self.function(function);
                    }
                    ExportDefaultDeclarationKind::ClassDeclaration(class) if class.id.is_some() => {
                        self.edits.replace(export.span.start, start, String::new());
                        self.class(class);
                    }
                    ExportDefaultDeclarationKind::TSInterfaceDeclaration(_) => {
                        self.edits
                            .replace(export.span.start, export.span.end, String::new())
                    }
                    other => {
                        // Parenthesised so that an object literal is not read as a block.
                        self.edits.replace(export.span.start, start, ";(".into());
                        self.edits.insert(other.span().end, ")".into());
                    }
                }
            }
            Statement::ExportAllDeclaration(export) => {
                self.edits
                    .replace(export.span.start, export.span.end, String::new());
            }
            _ => {}
        }
    }

    fn exported(&mut self, declaration: &Declaration<'_>) {
        match declaration {
            Declaration::VariableDeclaration(declaration) => self.variables(declaration),
            Declaration::FunctionDeclaration(function) => self.function(function),
            Declaration::ClassDeclaration(class) => self.class(class),
            _ => {}
        }
    }

    fn variables(&mut self, declaration: &VariableDeclaration<'_>) {
        // `using` declarations are scoped resources: leave them as they are.
        if matches!(
            declaration.kind,
            VariableDeclarationKind::Var
                | VariableDeclarationKind::Let
                | VariableDeclarationKind::Const
        ) {
            self.declaration(&DeclarationInfo::new(declaration, Place::Statement));
        }
    }

    /// `const a = 1, {b} = o;` → `a = 1, ({b} = o);` with `a` and `b` hoisted.
    fn declaration(&mut self, declaration: &DeclarationInfo) {
        let Some(first) = declaration.declarators.first() else {
            return;
        };
        for declarator in &declaration.declarators {
            for name in &declarator.names {
                self.hoist(name);
            }
        }
        if declaration.place == Place::ForLeft {
            // `for (var [k, v] of entries)` → `for ([k, v] of entries)`.
            self.edits
                .replace(declaration.start, first.start, String::new());
            return;
        }
        // A statement that starts with `(` must not continue the previous line.
        let keyword = if declaration.place == Place::Statement && first.is_pattern {
            ";"
        } else {
            ""
        };
        self.edits
            .replace(declaration.start, first.start, keyword.into());
        for declarator in &declaration.declarators {
            if declarator.is_pattern && declarator.has_init {
                self.edits.insert(declarator.start, "(".into());
                self.edits.insert(declarator.end, ")".into());
            } else if !declarator.has_init && declaration.kind != VariableDeclarationKind::Var {
                // Re-running `let x;` resets x, as a fresh declaration would.
                self.edits.insert(declarator.end, " = void 0".into());
            }
        }
    }

    fn function(&mut self, function: &Function<'_>) {
        if let Some(id) = &function.id
            && self.is_async
        {
            let name = id.name.as_str().to_owned();
            if !self.functions.contains(&name) {
                self.functions.push(name);
            }
        }
    }

    /// `class A {}` → `A = class A {};` with `A` hoisted.
    fn class(&mut self, class: &Class<'_>) {
        if let Some(id) = &class.id {
            let name = id.name.as_str().to_owned();
            self.hoist(&name);
            self.edits.insert(class.span.start, format!("{name} = "));
            self.edits.insert(class.span.end, ";".into());
        }
    }

    /// `import d, {a as b} from "m"` → `d = <default of require("m")>; b = require("m").a;`.
    fn import(&mut self, import: &ImportDeclaration<'_>) {
        let source = import.source.span.source_text(self.source);
        let module = format!("require({source})");
        let mut code = String::new();
        match &import.specifiers {
            None => code.push_str(&format!("{module};")),
            Some(specifiers) if specifiers.is_empty() => code.push_str(&format!("{module};")),
            Some(specifiers) => {
                for specifier in specifiers {
                    let local = specifier.local().name.as_str().to_owned();
                    let value = match specifier {
                        ImportDeclarationSpecifier::ImportDefaultSpecifier(_) => {
                            format!("((m) => m && m.__esModule ? m.default : m)({module})")
                        }
                        ImportDeclarationSpecifier::ImportNamespaceSpecifier(_) => module.clone(),
                        ImportDeclarationSpecifier::ImportSpecifier(named) => {
                            let imported = named.imported.name();
                            let imported = imported.as_str();
                            if imported == "default" {
                                format!("((m) => m && m.__esModule ? m.default : m)({module})")
                            } else {
                                format!("{module}[{}]", js_string(imported))
                            }
                        }
                    };
                    code.push_str(&format!("{local} = {value}; "));
                    self.hoist(&local);
                }
            }
        }
        self.edits.replace(import.span.start, import.span.end, code);
    }
}

/// A JavaScript string literal for `value`.
fn js_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text edits by byte range; applied in order of position (insertions at one position in
/// the order they were made).
#[derive(Default)]
struct Edits {
    edits: Vec<(u32, u32, String)>,
}

impl Edits {
    fn replace(&mut self, start: u32, end: u32, text: String) {
        self.edits.push((start, end, text));
    }

    fn insert(&mut self, at: u32, text: String) {
        self.edits.push((at, at, text));
    }

    /// The edited source after `prefix`, and where its columns come from.
    fn apply(mut self, prefix: &str, source: &str) -> (String, LineMap) {
        // Insertions at a position go before a replacement starting there (stable otherwise).
        self.edits.sort_by_key(|(start, end, _)| (*start, *end));
        let mut out = String::with_capacity(prefix.len() + source.len() + 64);
        out.push_str(prefix);
        let mut map = LineMap::default();
        let mut out_position = Position::default().advance(prefix);
        let mut in_position = Position::default();
        map.segment(0, 0, 0, out_position.shift_from(in_position));
        let mut cursor = 0usize;
        for (start, end, text) in self.edits {
            let (start, end) = (start as usize, end as usize);
            // Overlaps cannot happen with the edits above; skip defensively rather than panic.
            if start < cursor || end > source.len() {
                continue;
            }
            let kept = &source[cursor..start];
            out.push_str(kept);
            out.push_str(&text);
            // Keep the line count, so that every later line keeps its number.
            let removed = &source[start..end];
            let missing = removed
                .matches('\n')
                .count()
                .saturating_sub(text.matches('\n').count());
            let newlines = "\n".repeat(missing);
            out.push_str(&newlines);
            out_position = out_position.advance(kept).advance(&text).advance(&newlines);
            in_position = in_position.advance(kept).advance(removed);
            map.segment(
                out_position.line,
                out_position.column,
                out_position.line,
                out_position.shift_from(in_position),
            );
            cursor = end;
        }
        out.push_str(&source[cursor..]);
        (out, map)
    }
}

/// A 0-based line and UTF-16 column.
#[derive(Debug, Default, Clone, Copy)]
struct Position {
    line: u32,
    column: u32,
}

impl Position {
    fn advance(self, text: &str) -> Self {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match text.rfind('\n') {
            Some(last) => Self {
                line: self.line + count(text.matches('\n').count()),
                column: count(text[last + 1..].encode_utf16().count()),
            },
            None => Self {
                line: self.line,
                column: self.column + count(text.encode_utf16().count()),
            },
        }
    }

    fn shift_from(self, source: Self) -> i64 {
        i64::from(self.column) - i64::from(source.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(source: &str) -> Prepared {
        match rewrite(source) {
            Ok(rewritten) => rewritten.prepared,
            Err(error) => panic!("{source:?}: {error}"),
        }
    }

    #[test]
    fn declarations_become_hoisted_assignments() {
        let prepared = code("const a = 1, {b, c: [d]} = o;\nlet e;\nclass F {}\nvar g = 2\na + g");
        assert!(!prepared.is_async);
        assert_eq!(
            prepared.code,
            "var a, b, d, e, F, g; a = 1, ({b, c: [d]} = o);\ne = void 0;\nF = class F {};\ng = 2\na + g"
        );
    }

    #[test]
    fn sync_cell_without_final_expression_completes_with_undefined() {
        let prepared = code("1 + 1; const x = 3");
        assert_eq!(prepared.code, "var x; 1 + 1; x = 3\n;void 0");
    }

    #[test]
    fn destructuring_statement_is_guarded_against_asi() {
        let prepared = code("f()\nconst [a] = g");
        assert_eq!(prepared.code, "var a; f()\n;([a] = g)\n;void 0");
    }

    #[test]
    fn top_level_await_wraps_in_async_iife_returning_last_expression() {
        let prepared = code("const x = await p;\nfunction f() {}\nx + 1 // done");
        assert!(prepared.is_async);
        assert_eq!(
            prepared.code,
            "var x; (async () => { this.f = f; x = await p;\nfunction f() {}\nreturn (x + 1) // done\n})()"
        );
    }

    #[test]
    fn await_inside_functions_is_not_top_level() {
        for source in [
            "async function f() { await 1 }",
            "const g = async () => await 1",
            "class C { async m() { await 1 } static { } }",
        ] {
            assert!(!code(source).is_async, "{source}");
        }
        assert!(code("for await (const x of xs) {}").is_async);
        assert!(code("if (a) { await b }").is_async);
        assert!(!code("async function f() { for await (const x of xs) {} }").is_async);
    }

    #[test]
    fn nested_vars_are_hoisted_out_of_the_iife() {
        let prepared = code(
            "await 0; if (t) { var a = 1 } for (var i = 0, j; i < 2; i++) {} for (var k in o) {} function f() { var local }",
        );
        assert_eq!(
            prepared.code,
            "var a, i, j, k; (async () => { this.f = f; await 0; if (t) { a = 1 } for (i = 0, j; i < 2; i++) {} for (k in o) {} function f() { var local }\n})()"
        );
    }

    #[test]
    fn imports_and_exports_become_requires_and_plain_declarations() {
        let prepared = code(
            "import fs, { join as j } from 'node:path';\nimport * as os from \"os\"\nexport const v = 1;\nexport { v as w };\nexport default 5",
        );
        assert_eq!(
            prepared.code,
            "var fs, j, os, v; fs = ((m) => m && m.__esModule ? m.default : m)(require('node:path')); j = require('node:path')[\"join\"]; \nos = require(\"os\"); \nv = 1;\n\n;(5)\n;void 0"
        );
    }

    #[test]
    fn dynamic_imports_go_through_the_executor_loader() {
        let prepared = code("const m = await import('node:path'); const f = () => import ( x )");
        assert_eq!(
            prepared.code,
            "var m, f; (async () => { m = await __sandpit_import__('node:path'); f = () => __sandpit_import__(x )\n})()"
        );
        assert_eq!(
            code("await 0; import('m')").code,
            "(async () => { await 0; return (__sandpit_import__('m'))\n})()"
        );
    }

    #[test]
    fn removed_and_empty_statements_do_not_end_the_cell() {
        assert_eq!(code("a;\nexport {};;").code, "a;\n;");
        assert_eq!(
            code("await a;\nexport {};").code,
            "(async () => { return (await a);\n\n})()"
        );
    }

    #[test]
    fn anonymous_default_exports_become_expressions() {
        assert_eq!(code("export default class {}").code, ";(class {})\n;void 0");
        assert_eq!(
            code("export default function () {}").code,
            ";(function () {})\n;void 0"
        );
    }

    #[test]
    fn sloppy_mode_code_parses_as_a_script() {
        let prepared = code("var o = { a: 1 }; with (o) { a }\nlet x = 010; x");
        assert_eq!(
            prepared.code,
            "var o, x; o = { a: 1 }; with (o) { a }\nx = 010; x"
        );
        let prepared = code("with (o) {} await x");
        assert!(prepared.is_async, "{}", prepared.code);
    }

    #[test]
    fn hashbang_is_dropped() {
        assert_eq!(
            code("#!/usr/bin/env node\nconst a = 1").code,
            "var a; \na = 1\n;void 0"
        );
    }

    #[test]
    fn syntax_error_reports_line_and_column() {
        let Err(PrepareError::Syntax { line, column, .. }) = rewrite("let a = 1;\nlet b = ;")
        else {
            panic!("expected a syntax error");
        };
        assert_eq!((line, column), (Some(2), Some(9)));
    }
}
