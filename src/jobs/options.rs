//! What a job stores for its items and how an item becomes a describe request: the job's options
//! (one set for every item, kept as JSON on the job) and the item's own `asset_id`, `context` and
//! `metadata`, merged into the `DescribeOptions` that a single request would carry, so the one
//! validation stage (`Validator`) checks both at submission and again when the item runs.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::describe::{ContextOptions, DescribeOptions, DescribeRequest, ImageSource};
use crate::store::job_items::ClaimedItem;
use crate::store::jobs::NewItem;

/// The options every item of a job is described with: those of `POST /v1/descriptions` that are
/// not about one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_words: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_beams: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl JobOptions {
    /// The describe request of one item, as a single request with these options would be.
    pub fn request(&self, item: &NewItem, context: Option<ContextOptions>) -> DescribeRequest {
        DescribeRequest {
            source: ImageSource::Url(item.image_url.clone()),
            options: DescribeOptions {
                model: self.model.clone(),
                outputs: self.outputs.clone(),
                detail: self.detail.clone(),
                language: self.language.clone(),
                context,
                tone: self.tone.clone(),
                max_new_tokens: self.max_new_tokens,
                num_beams: self.num_beams,
                max_chars: self.max_chars,
                max_words: self.max_words,
                keyword_count: self.keyword_count,
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                asset_id: item.asset_id.clone(),
                metadata: item.metadata.clone(),
            },
        }
    }
}

/// A claimed item's describe request, from what the job stored. `Err` names what could not be
/// read back (a row this version cannot read).
pub fn claimed_request(item: &ClaimedItem) -> Result<DescribeRequest, String> {
    let options: JobOptions = serde_json::from_value(item.options.clone())
        .map_err(|e| format!("the job's stored options cannot be read: {e}"))?;
    let context = item.context.as_ref().map(context_from_json).transpose()?;
    let new = NewItem {
        image_url: item.image_url.clone(),
        asset_id: item.asset_id.clone(),
        context: None,
        metadata: item.metadata.clone(),
    };
    Ok(options.request(&new, context))
}

/// Product context as `ContextOptions::to_json` stored it.
pub fn context_from_json(value: &Value) -> Result<ContextOptions, String> {
    let object = value
        .as_object()
        .ok_or_else(|| "context is not a JSON object".to_string())?;
    let text = |name: &str| -> Result<Option<String>, String> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("context.{name} is not text")),
        }
    };
    let mut context = ContextOptions {
        title: text("title")?,
        brand: text("brand")?,
        category: text("category")?,
        ..ContextOptions::default()
    };
    for name in object.keys() {
        if !["title", "brand", "category", "attributes", "keywords"].contains(&name.as_str()) {
            return Err(format!(
                "context has an unknown field `{name}` (title, brand, category, attributes, keywords)"
            ));
        }
    }
    match object.get("attributes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(attributes)) => {
            for (name, value) in attributes {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("context.attributes.{name} is not text"))?;
                context.attributes.push((name.clone(), value.to_string()));
            }
        }
        Some(_) => return Err("context.attributes is not an object of text values".into()),
    }
    match object.get("keywords") {
        None | Some(Value::Null) => {}
        Some(Value::Array(keywords)) => {
            for keyword in keywords {
                let keyword = keyword.as_str().ok_or_else(|| {
                    "context.keywords holds something that is not text".to_string()
                })?;
                context.keywords.push(keyword.to_string());
            }
        }
        Some(_) => return Err("context.keywords is not a list of text".into()),
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_survives_its_stored_form() {
        let context = ContextOptions {
            title: Some("Mug".into()),
            brand: None,
            category: Some("Kitchen".into()),
            attributes: vec![("colour".into(), "white".into())],
            keywords: vec!["handmade".into()],
        };
        assert_eq!(context_from_json(&context.to_json()).unwrap(), context);
        assert!(context_from_json(&serde_json::json!({"colour": "red"})).is_err());
        assert!(context_from_json(&serde_json::json!({"keywords": "a,b"})).is_err());
    }

    #[test]
    fn stored_options_read_back_as_written() {
        let options = JobOptions {
            outputs: Some(vec!["alt_text".into(), "keywords".into()]),
            language: Some("de".into()),
            keyword_count: Some(5),
            ..JobOptions::default()
        };
        let stored = serde_json::to_value(&options).unwrap();
        assert_eq!(stored.as_object().unwrap().len(), 3);
        assert_eq!(
            serde_json::from_value::<JobOptions>(stored).unwrap(),
            options
        );
    }
}
