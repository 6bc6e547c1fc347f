//! What a component's code must look like before it is compiled. Cranelift's time and
//! memory grow faster than a function's size: one upload of eight 3.5 MB functions
//! compiled for 290 s at 3.7 GiB. Every function body is measured first (a parse, no
//! compile), and a component with one over [`MAX_FUNCTION_BYTES`] is refused with its
//! size. What passes is bounded by the upload limit, and its compile by the child's
//! time and memory ([`super::compile`]).

use wasmparser::{Parser, Payload};

/// The largest function body a plugin may hold: 2 MiB of code, about five times the
/// largest of the components this project builds (CPython's interpreter loop in
/// componentize-py's output, 0.4 MiB).
pub const MAX_FUNCTION_BYTES: usize = 2 << 20;

/// Refuses `wasm` when a function body is over [`MAX_FUNCTION_BYTES`]. Bytes that do
/// not parse are left to the compiler, which says what is wrong with them.
pub fn screen(wasm: &[u8]) -> Result<(), String> {
    let (mut module, mut function) = (0usize, 0usize);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::CodeSectionStart { .. }) => {
                (module, function) = (module + 1, 0);
            }
            Ok(Payload::CodeSectionEntry(body)) => {
                let size = body.range().len();
                if size > MAX_FUNCTION_BYTES {
                    return Err(format!(
                        "function {function} of its core module {module} is {:.1} MiB of code, over the {} MiB a plugin function may be (compiling it would take minutes and gigabytes): split it into smaller functions",
                        size as f64 / (1 << 20) as f64,
                        MAX_FUNCTION_BYTES >> 20
                    ));
                }
                function += 1;
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}
