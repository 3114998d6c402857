//! Product context as a caller sends it (title, brand, category, attributes, keywords, tone),
//! and the limits that keep it short text: every field is size-limited and one line, so product
//! data can describe the product but cannot carry a second prompt. The family sanitises it again
//! where it places it (no special-token spans, whitespace collapsed).

use super::request::ValidationError;
use crate::model::ProductContext;
use crate::strings::{self, Shape};

/// The longest `title`, `brand` or `category`, in characters.
pub const MAX_FIELD_CHARS: usize = 200;
/// At most this many attributes and keywords.
pub const MAX_ATTRIBUTES: usize = 30;
pub const MAX_KEYWORDS: usize = 30;
/// The longest attribute name and keyword, in characters.
pub const MAX_NAME_CHARS: usize = 60;
/// The longest attribute value, in characters.
pub const MAX_VALUE_CHARS: usize = 200;
/// The longest `tone`, in characters.
pub const MAX_TONE_CHARS: usize = 100;
/// All of a request's context text together, in bytes: a prompt that stays a product brief.
pub const MAX_CONTEXT_BYTES: usize = 4096;

/// What the caller knows about the product, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextOptions {
    pub title: Option<String>,
    pub brand: Option<String>,
    pub category: Option<String>,
    /// Name and value, in the caller's order.
    pub attributes: Vec<(String, String)>,
    pub keywords: Vec<String>,
}

impl ContextOptions {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.brand.is_none()
            && self.category.is_none()
            && self.attributes.is_empty()
            && self.keywords.is_empty()
    }

    /// As stored with the description and shown in answers: absent fields left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        for (name, value) in [
            ("title", &self.title),
            ("brand", &self.brand),
            ("category", &self.category),
        ] {
            if let Some(value) = value {
                object.insert(name.into(), value.clone().into());
            }
        }
        if !self.attributes.is_empty() {
            let attributes = self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect();
            object.insert("attributes".into(), serde_json::Value::Object(attributes));
        }
        if !self.keywords.is_empty() {
            object.insert("keywords".into(), self.keywords.clone().into());
        }
        serde_json::Value::Object(object)
    }

    /// Checks every field against its limit; the model's form of it.
    pub fn check(&self) -> Result<ProductContext, ValidationError> {
        let mut total = 0;
        let mut field = |name: &str, value: &str, limit: usize| {
            total += value.len();
            check_text(&format!("context.{name}"), value, limit)
        };
        for (name, value) in [
            ("title", &self.title),
            ("brand", &self.brand),
            ("category", &self.category),
        ] {
            if let Some(value) = value {
                field(name, value, MAX_FIELD_CHARS)?;
            }
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(invalid(format!(
                "context.attributes has {} entries; at most {MAX_ATTRIBUTES}",
                self.attributes.len()
            )));
        }
        for (name, value) in &self.attributes {
            field("attributes (a name)", name, MAX_NAME_CHARS)?;
            field(&format!("attributes.{name}"), value, MAX_VALUE_CHARS)?;
        }
        if self.keywords.len() > MAX_KEYWORDS {
            return Err(invalid(format!(
                "context.keywords has {} items; at most {MAX_KEYWORDS}",
                self.keywords.len()
            )));
        }
        for keyword in &self.keywords {
            field("keywords (an item)", keyword, MAX_NAME_CHARS)?;
        }
        if total > MAX_CONTEXT_BYTES {
            return Err(invalid(format!(
                "the context holds {total} bytes of text; at most {MAX_CONTEXT_BYTES}"
            )));
        }
        Ok(ProductContext {
            title: self.title.clone(),
            brand: self.brand.clone(),
            category: self.category.clone(),
            attributes: self.attributes.clone(),
            keywords: self.keywords.clone(),
        })
    }
}

/// `tone`: one line of at most [`MAX_TONE_CHARS`].
pub fn check_tone(tone: &str) -> Result<(), ValidationError> {
    check_text("tone", tone, MAX_TONE_CHARS)
}

fn check_text(name: &str, value: &str, limit: usize) -> Result<(), ValidationError> {
    let chars = value.chars().count();
    if chars > limit {
        return Err(invalid(format!(
            "{name} has {chars} characters; at most {limit}"
        )));
    }
    if value.trim().is_empty() {
        return Err(invalid(format!("{name} is empty; leave it out instead")));
    }
    strings::check(value, Shape::Line).map_err(|forbidden| {
        ValidationError::new(
            "invalid_characters",
            format!("`{name}` contains {forbidden}; remove it"),
        )
    })
}

fn invalid(message: String) -> ValidationError {
    ValidationError::new("invalid_context", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(f: impl FnOnce(&mut ContextOptions)) -> ContextOptions {
        let mut context = ContextOptions::default();
        f(&mut context);
        context
    }

    #[test]
    fn every_field_has_a_limit_and_is_one_line() {
        let long = "x".repeat(MAX_FIELD_CHARS + 1);
        let refused = [
            (context(|c| c.title = Some(long.clone())), "invalid_context"),
            (context(|c| c.brand = Some(" ".into())), "invalid_context"),
            (
                context(|c| c.category = Some("a\nb".into())),
                "invalid_characters",
            ),
            (
                context(|c| {
                    c.attributes = (0..=MAX_ATTRIBUTES)
                        .map(|i| (format!("k{i}"), "v".into()))
                        .collect()
                }),
                "invalid_context",
            ),
            (
                context(|c| c.attributes = vec![("k".into(), "x".repeat(MAX_VALUE_CHARS + 1))]),
                "invalid_context",
            ),
            (
                context(|c| c.keywords = vec!["ok".into(), "tab\there".into()]),
                "invalid_characters",
            ),
            (
                context(|c| {
                    c.attributes = (0..MAX_ATTRIBUTES)
                        .map(|i| (format!("k{i}"), "v".repeat(MAX_VALUE_CHARS)))
                        .collect()
                }),
                "invalid_context",
            ),
        ];
        for (asked, code) in refused {
            let error = asked.check().unwrap_err();
            assert_eq!(error.code, code, "{asked:?}: {error}");
        }
        let fine = context(|c| {
            c.title = Some("Keramikbecher „Morgenrot“".into());
            c.attributes = vec![("Farbe".into(), "Weiß".into())];
            c.keywords = vec!["Becher".into()];
        });
        let model = fine.check().unwrap();
        assert_eq!(model.attributes, fine.attributes);
        assert_eq!(
            fine.to_json(),
            serde_json::json!({"title": "Keramikbecher „Morgenrot“", "attributes": {"Farbe": "Weiß"}, "keywords": ["Becher"]})
        );
        assert!(check_tone(&"t".repeat(MAX_TONE_CHARS + 1)).is_err());
    }
}
