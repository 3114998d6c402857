//! The three description styles and their prompt texts, read from the model's
//! `preprocessor_config.json` task maps (spec section 5.1) rather than hard-coded.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ModelError;
use super::config::read_json_object;

/// How much text the caller wants. Each maps to one Florence-2 caption task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Detail {
    /// One short sentence (`<CAPTION>`): alt text.
    #[default]
    Brief,
    /// A few sentences (`<DETAILED_CAPTION>`).
    Detailed,
    /// A paragraph (`<MORE_DETAILED_CAPTION>`): product descriptions.
    Paragraph,
}

impl Detail {
    pub const ALL: [Detail; 3] = [Detail::Brief, Detail::Detailed, Detail::Paragraph];

    pub fn task_token(self) -> &'static str {
        match self {
            Detail::Brief => "<CAPTION>",
            Detail::Detailed => "<DETAILED_CAPTION>",
            Detail::Paragraph => "<MORE_DETAILED_CAPTION>",
        }
    }

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

/// Prompt text per detail level, resolved once at load.
#[derive(Debug, Clone)]
pub struct Prompts {
    texts: [String; 3],
}

impl Prompts {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let file = dir.join("preprocessor_config.json");
        let object = read_json_object(&file, dir)?;
        Self::from_preprocessor_config(&Value::Object(object)).map_err(|message| {
            ModelError::ModelDir {
                dir: dir.to_path_buf(),
                message: format!("preprocessor_config.json: {message}"),
            }
        })
    }

    pub fn from_preprocessor_config(config: &Value) -> Result<Self, String> {
        let map = config
            .get("task_prompts_without_inputs")
            .and_then(Value::as_object)
            .ok_or("missing the `task_prompts_without_inputs` map")?;
        let post = config
            .get("tasks_answer_post_processing_type")
            .and_then(Value::as_object);
        let text_for = |detail: Detail| -> Result<String, String> {
            let token = detail.task_token();
            if let Some(kind) = post.and_then(|p| p.get(token)).and_then(Value::as_str)
                && kind != "pure_text"
            {
                return Err(format!(
                    "task {token} is post-processed as `{kind}`, expected `pure_text`"
                ));
            }
            map.get(token)
                .and_then(Value::as_str)
                .map(str::to_string)
                .filter(|text| !text.trim().is_empty())
                .ok_or_else(|| format!("`task_prompts_without_inputs` has no prompt for {token}"))
        };
        Ok(Self {
            texts: [
                text_for(Detail::Brief)?,
                text_for(Detail::Detailed)?,
                text_for(Detail::Paragraph)?,
            ],
        })
    }

    pub fn text(&self, detail: Detail) -> &str {
        &self.texts[detail as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_prompts_from_the_task_map() {
        let config = json!({
            "task_prompts_without_inputs": {
                "<CAPTION>": "What does the image describe?",
                "<DETAILED_CAPTION>": "Describe in detail what is shown in the image.",
                "<MORE_DETAILED_CAPTION>": "Describe with a paragraph what is shown in the image."
            },
            "tasks_answer_post_processing_type": {"<CAPTION>": "pure_text"}
        });
        let prompts = Prompts::from_preprocessor_config(&config).unwrap();
        assert_eq!(prompts.text(Detail::Brief), "What does the image describe?");
        assert_eq!(
            prompts.text(Detail::Paragraph),
            "Describe with a paragraph what is shown in the image."
        );
    }

    #[test]
    fn missing_task_is_an_error_naming_it() {
        let config = json!({"task_prompts_without_inputs": {"<CAPTION>": "x"}});
        let err = Prompts::from_preprocessor_config(&config).unwrap_err();
        assert!(err.contains("<DETAILED_CAPTION>"), "{err}");
    }

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
