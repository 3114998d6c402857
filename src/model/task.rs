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

/// What text to write about the image: the API's `outputs`. Florence-2 writes captions (its
/// `detail` levels); an instruct family writes each of these from its own prompt.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// One sentence for the image's `alt` attribute.
    #[default]
    AltText,
    /// A product description.
    Description,
    /// A page title for search engines (at most 60 characters).
    SeoTitle,
    /// Search keywords, comma-separated.
    Keywords,
}

impl Output {
    pub const ALL: [Output; 4] = [
        Output::AltText,
        Output::Description,
        Output::SeoTitle,
        Output::Keywords,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Output::AltText => "alt_text",
            Output::Description => "description",
            Output::SeoTitle => "seo_title",
            Output::Keywords => "keywords",
        }
    }
}

/// What a shop knows about the product in the image. Text for the prompt, never instructions:
/// families sanitise it before they place it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductContext {
    pub title: Option<String>,
    pub brand: Option<String>,
    pub category: Option<String>,
    /// In the order given.
    pub attributes: Vec<(String, String)>,
    pub keywords: Vec<String>,
}

impl ProductContext {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.brand.is_none()
            && self.category.is_none()
            && self.attributes.is_empty()
            && self.keywords.is_empty()
    }
}

/// What a loaded model can be asked for: the describe service checks each request against it
/// and names another loaded model when this one cannot (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub outputs: Vec<Output>,
    /// BCP 47 tags, lower case; a request's tag matches by the whole tag or its primary subtag
    /// (`pt-BR` → `pt`).
    pub languages: Vec<String>,
    /// Title, brand, category, attributes, keywords and tone in the prompt.
    pub product_context: bool,
    /// `temperature`, `top_p`, `seed`.
    pub sampling: bool,
    /// Florence-2's `detail` levels.
    pub detail: bool,
}

impl Capabilities {
    /// Whether `tag` is one of the languages, by the whole tag or its primary subtag.
    pub fn speaks(&self, tag: &str) -> bool {
        let tag = tag.to_ascii_lowercase();
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        self.languages.iter().any(|l| *l == tag || l == primary)
    }
}

/// One output of one image. Validated before it reaches a model (`describe::request`) against
/// what the model's card says it can do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    /// Florence-2's caption length.
    pub detail: Detail,
    pub output: Output,
    /// BCP 47 (`de`, `pt-BR`); `None` is English.
    pub language: Option<String>,
    pub context: ProductContext,
    pub tone: Option<String>,
    /// Target length of alt text, in characters.
    pub max_chars: Option<usize>,
    /// Target length of a description, in words.
    pub max_words: Option<usize>,
    /// How many keywords.
    pub keyword_count: Option<usize>,
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
