//! Ad-hoc SQL batches (pymssql, FreeTDS, sqlcmd): literals bound to mapped
//! columns become `0x...` ciphertext literals, and column types in CREATE /
//! ALTER TABLE of mapped tables become their storage type. The text is
//! edited by byte spans, so everything else stays exactly as written
//! ([MS-TDS] 2.2.6.7 SQLBatch carries the text as UCS-2; it is re-encoded
//! from the edited string).

use std::fmt::Write;

use crate::rewrite::analysis::{Analysis, ValueSource};
use crate::rewrite::error::{Refusal, RefusalKind};
use crate::rewrite::Session;

/// Where the text comes from: a SQL batch, whose `@names` are local
/// variables the proxy cannot see, or an RPC statement, whose `@names` are
/// parameters sealed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Batch,
    RpcStatement,
}

/// The rewritten text, or `None` when nothing changes.
pub fn rewrite_text(
    session: &Session,
    text: &str,
    analysis: &Analysis,
    kind: TextKind,
) -> Result<Option<String>, Refusal> {
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for b in &analysis.bindings {
        match &b.source {
            ValueSource::Param(_) if kind == TextKind::RpcStatement => {}
            ValueSource::Param(p) => {
                return Err(Refusal::new(
                    RefusalKind::Unsupported,
                    format!(
                        "{p} is a local variable of the batch; a value for {} must be a literal or \
                         an RPC parameter",
                        b.column.display_name()
                    ),
                ))
            }
            ValueSource::Literal(l) => {
                let sealed = session.seal(&b.column, &l.value)?;
                let replacement =
                    sealed.map_or_else(|| "NULL".to_string(), |env| hex_literal(&env));
                edits.push((l.start, l.end, replacement));
            }
        }
    }
    for e in &analysis.schema_edits {
        edits.push((e.start, e.end, session.storage_declaration(&e.column)));
        tracing::info!(
            column = %e.column.display_name(),
            storage = %session.storage_declaration(&e.column),
            "storage type of a mapped column rewritten"
        );
    }
    if edits.is_empty() {
        return Ok(None);
    }
    apply_edits(text, edits).map(Some)
}

/// `0x` followed by upper-case hex digits.
pub fn hex_literal(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Replaces non-overlapping byte ranges; the rest of the text is kept.
fn apply_edits(text: &str, mut edits: Vec<(usize, usize, String)>) -> Result<String, Refusal> {
    edits.sort_by_key(|e| e.0);
    let mut out =
        String::with_capacity(text.len() + edits.iter().map(|e| e.2.len()).sum::<usize>());
    let mut at = 0;
    for (start, end, replacement) in edits {
        let kept = text.get(at..start).filter(|_| start >= at && end >= start);
        let Some(kept) = kept.filter(|_| text.is_char_boundary(end)) else {
            return Err(Refusal::new(
                RefusalKind::Unparseable,
                "overlapping or misplaced literal spans",
            ));
        };
        out.push_str(kept);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_the_rest_byte_identical() {
        let text = "SELECT 'a' , N'é' -- comment\n";
        let out = apply_edits(text, vec![(13, 18, "0xAB".into()), (7, 10, "0x01".into())]).unwrap();
        assert_eq!(out, "SELECT 0x01 , 0xAB -- comment\n");
    }

    #[test]
    fn hex_is_upper_case_with_prefix() {
        assert_eq!(hex_literal(&[0x00, 0xAB, 0x7f]), "0x00AB7F");
    }

    #[test]
    fn overlapping_edits_are_refused() {
        assert!(apply_edits("abcdef", vec![(0, 3, "x".into()), (2, 4, "y".into())]).is_err());
    }
}
