//! Florence-2's prompt per detail level: each `Detail` is one caption task token, whose prompt
//! text is read from the model's `preprocessor_config.json` task maps (spec section 5.1) rather
//! than hard-coded.

use std::path::Path;

use serde_json::Value;

use crate::model::ModelError;
use crate::model::config::read_json_object;
use crate::model::task::Detail;

/// The caption task token of a detail level.
pub fn task_token(detail: Detail) -> &'static str {
    match detail {
        Detail::Brief => "<CAPTION>",
        Detail::Detailed => "<DETAILED_CAPTION>",
        Detail::Paragraph => "<MORE_DETAILED_CAPTION>",
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
            let token = task_token(detail);
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
}
