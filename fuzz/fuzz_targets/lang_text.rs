//! The lexer and parser over any text: never a panic; an error points
//! inside the text and renders with its caret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use segql::lang::{lexer, parse};

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let lexed = lexer::lex(&source);
    match parse(&source) {
        Ok(_) => assert!(lexed.is_ok(), "parsed text that does not lex: {source:?}"),
        Err(error) => {
            assert!(
                error.span.start <= error.span.end && error.span.end <= source.len(),
                "span {:?} outside a text of {} bytes",
                error.span,
                source.len()
            );
            let rendered = error.render(&source);
            assert!(rendered.starts_with("error: "), "{rendered}");
        }
    }
});
