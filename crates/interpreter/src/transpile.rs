//! TypeScript → JavaScript with oxc (types stripped, enums and namespaces compiled).

use std::path::{Path, PathBuf};

use oxc::allocator::Allocator;
use oxc::codegen::{Codegen, CodegenOptions};
use oxc::parser::Parser;
use oxc::semantic::SemanticBuilder;
use oxc::span::SourceType;
use oxc::transformer::{HelperLoaderMode, TransformOptions, Transformer};

use crate::PrepareError;
use crate::lines::LineMap;

/// The Node version the sandbox images ship at least; newer syntax is lowered to it.
const TARGET: &str = "node20";

/// Transpiles one TypeScript cell (module syntax, so top-level `await` parses) to JavaScript,
/// with the map of its lines back to the TypeScript source.
pub(crate) fn typescript_to_javascript(source: &str) -> Result<(String, LineMap), PrepareError> {
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
    let mut options =
        TransformOptions::from_target(TARGET).map_err(|message| PrepareError::Syntax {
            message,
            line: None,
            column: None,
        })?;
    // Node runs no decorators natively; TypeScript code written with them expects the
    // `experimentalDecorators` semantics.
    options.decorator.legacy = true;
    // Helpers (only the decorator ones at this target) come from the executor's global
    // `babelHelpers`: a cell cannot import oxc's runtime package.
    options.helper_loader.mode = HelperLoaderMode::External;
    let transformed = Transformer::new(&allocator, Path::new("cell.ts"), &options)
        .build_with_scoping(scoping, &mut program);
    if let Some(error) = PrepareError::from_diagnostics(source, transformed.diagnostics.errors()) {
        return Err(error);
    }
    let options = CodegenOptions {
        // Only to get the token positions back: the map is never serialised.
        source_map_path: Some(PathBuf::from("cell.ts")),
        ..CodegenOptions::default()
    };
    let generated = Codegen::new().with_options(options).build(&program);
    let mut map = LineMap::default();
    if let Some(source_map) = &generated.map {
        for token in source_map.get_tokens() {
            map.segment(
                token.get_dst_line(),
                token.get_dst_col(),
                token.get_src_line(),
                i64::from(token.get_dst_col()) - i64::from(token.get_src_col()),
            );
        }
    }
    map.fill_gaps();
    Ok((generated.code, map))
}
