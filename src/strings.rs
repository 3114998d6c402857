//! What a string from outside may hold, and what an id looks like: one rule for the HTTP edge,
//! the CLI and the store's own checks, so that SQLite and PostgreSQL see the same strings.
//!
//! PostgreSQL refuses NUL in `text` (and `\u0000` in JSON) with an error, SQLite stores it; a rule
//! only at the database would answer the same request differently per backend. Other control
//! characters and Unicode noncharacters are refused too: no name, id or alt text needs them, and
//! screen readers, CSV importers and terminals all mishandle them.

/// Where a string goes, which decides whether line breaks and tabs are part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One line: ids, names, emails, key names, asset ids, query parameters.
    Line,
    /// Prose that may hold tab, line feed and carriage return: descriptions, metadata values.
    Text,
}

/// The first character a string may not hold, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub character: char,
    /// Position in characters, from 0.
    pub position: usize,
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = u32::from(self.character);
        let what = match self.character {
            '\0' => "NUL",
            '\t' => "a tab",
            '\n' | '\r' => "a line break",
            c if c.is_control() => "a control character",
            _ => "a Unicode noncharacter",
        };
        write!(
            f,
            "U+{code:04X} ({what}) at character {}",
            self.position + 1
        )
    }
}

/// `Ok` when `value` holds no character that `shape` forbids.
pub fn check(value: &str, shape: Shape) -> Result<(), Forbidden> {
    match value
        .chars()
        .enumerate()
        .find(|&(_, c)| is_forbidden(c, shape))
    {
        Some((position, character)) => Err(Forbidden {
            character,
            position,
        }),
        None => Ok(()),
    }
}

fn is_forbidden(c: char, shape: Shape) -> bool {
    if c.is_control() {
        // C0, DEL and C1 (Unicode category Cc).
        return !(shape == Shape::Text && matches!(c, '\t' | '\n' | '\r'));
    }
    let code = u32::from(c);
    // The 66 noncharacters: U+FDD0..U+FDEF and the last two code points of every plane.
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// The prefix of an id this server could have made, `<prefix>_<32 lower-case hex digits>` (the
/// form of [`crate::store::new_id`]: `desc_…`, `acct_…`, `key_…`, `mr_…`), or `None`. Anything
/// else names nothing, so it is answered without a query.
pub fn id_prefix(value: &str) -> Option<&str> {
    let (prefix, hex) = value.split_once('_')?;
    let prefix_ok =
        (1..=16).contains(&prefix.len()) && prefix.bytes().all(|b| b.is_ascii_lowercase());
    let hex_ok = hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (prefix_ok && hex_ok).then_some(prefix)
}

/// True for an id of the kind `prefix` names.
pub fn is_id(value: &str, prefix: &str) -> bool {
    id_prefix(value) == Some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_controls_are_refused_where_they_do_not_belong() {
        assert_eq!(check("sku-42", Shape::Line), Ok(()));
        assert_eq!(check("ein roter Schuh, größe 42 👟", Shape::Line), Ok(()));
        let nul = check("ab\0c", Shape::Text).unwrap_err();
        assert_eq!((nul.character, nul.position), ('\0', 2));
        assert_eq!(nul.to_string(), "U+0000 (NUL) at character 3");
        assert!(check("two\nlines\tand\r\n", Shape::Text).is_ok());
        assert!(check("two\nlines", Shape::Line).is_err());
        assert!(check("bell\u{7}", Shape::Text).is_err());
        assert!(check("del\u{7f}", Shape::Text).is_err());
        assert!(check("c1\u{85}", Shape::Text).is_err());
        assert!(check("esc\u{1b}[31m", Shape::Text).is_err());
    }

    #[test]
    fn noncharacters_are_refused_and_their_neighbours_kept() {
        for bad in [
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{FDD0}',
            '\u{FDEF}',
            '\u{1FFFF}',
            '\u{10FFFE}',
        ] {
            let error = check(&format!("x{bad}"), Shape::Text).unwrap_err();
            assert_eq!(error.character, bad);
            assert!(error.to_string().contains("noncharacter"), "{error}");
        }
        for good in ['\u{FDCF}', '\u{FDF0}', '\u{FFFD}', '\u{1FFFD}', '\u{200B}'] {
            assert!(check(&format!("x{good}"), Shape::Line).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn ids_have_one_form() {
        let id = crate::store::new_id("desc");
        assert!(is_id(&id, "desc"), "{id}");
        assert!(!is_id(&id, "acct"));
        assert!(!is_id(&format!("{id}\0"), "desc"));
        assert!(!is_id(&id.to_uppercase(), "desc"));
        assert!(!is_id("desc_", "desc"));
        assert!(!is_id("desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5", "desc"));
        assert!(is_id("desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f", "desc"));
        assert_eq!(id_prefix(&crate::store::new_id("mr")), Some("mr"));
        assert_eq!(id_prefix("desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f_x"), None);
        assert_eq!(id_prefix("_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f"), None);
    }
}
