//! What a caller asks a model for, in words no family owns: how much text ([`Detail`]) and, as
//! families grow, the language and product context. Each family turns a [`Task`] into its own
//! prompt; the engine and the HTTP layer only carry it.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How much text: `brief` is one sentence (alt text, the default), `detailed` a few sentences,
/// `paragraph` a paragraph (product descriptions). Each model family maps it to its own prompt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// One short sentence: alt text.
    #[default]
    Brief,
    /// A few sentences.
    Detailed,
    /// A paragraph: product descriptions.
    Paragraph,
}

impl Detail {
    pub const ALL: [Detail; 3] = [Detail::Brief, Detail::Detailed, Detail::Paragraph];

    pub fn as_str(self) -> &'static str {
        match self {
            Detail::Brief => "brief",
            Detail::Detailed => "detailed",
            Detail::Paragraph => "paragraph",
        }
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Detail {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "brief" => Ok(Detail::Brief),
            "detailed" => Ok(Detail::Detailed),
            "paragraph" => Ok(Detail::Paragraph),
            other => Err(format!(
                "unknown detail `{other}`: expected brief, detailed or paragraph"
            )),
        }
    }
}

/// One image's task. Validated before it reaches a model (`describe::request`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    pub detail: Detail,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_detail_names() {
        assert_eq!("Paragraph".parse::<Detail>().unwrap(), Detail::Paragraph);
        assert!("long".parse::<Detail>().is_err());
        assert_eq!(
            serde_json::to_string(&Detail::Detailed).unwrap(),
            "\"detailed\""
        );
    }
}
