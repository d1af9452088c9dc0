//! TypeScript → JavaScript with oxc (types stripped, enums and namespaces compiled).

use std::path::Path;

use oxc::allocator::Allocator;
use oxc::codegen::Codegen;
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{TransformOptions, Transformer};

use crate::PrepareError;

/// The Node version the sandbox images ship at least; newer syntax is lowered to it.
const TARGET: &str = "node20";

/// Transpiles one TypeScript cell (module syntax, so top-level `await` parses) to JavaScript.
pub(crate) fn typescript_to_javascript(source: &str) -> Result<String, PrepareError> {
    let allocator = Allocator::default();
    let parsed = Parser::new(&allocator, source, SourceType::ts()).parse();
    if let Some(error) = PrepareError::from_diagnostics(source, parsed.diagnostics.errors()) {
        return Err(error);
    }
    let mut program = parsed.program;
    // Enum evaluation is required: without it the transformer trips a debug assertion on enums.
    let semantic = SemanticBuilder::new()
        .with_excess_capacity(2.0)
        .with_enum_eval(true)
        .build(&program);
    let scoping = semantic.semantic.into_scoping();
    let options =
        TransformOptions::from_target(TARGET).map_err(|message| PrepareError::Syntax {
            message,
            line: None,
            column: None,
        })?;
    let transformed = Transformer::new(&allocator, Path::new("cell.ts"), &options)
        .build_with_scoping(scoping, &mut program);
    if let Some(error) = PrepareError::from_diagnostics(source, transformed.diagnostics.errors()) {
        return Err(error);
    }
    Ok(Codegen::new().build(&program).code)
}
