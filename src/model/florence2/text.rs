//! Text in and out of the model: the model dir's `tokenizer.json`, special tokens found by their
//! content (never by numeric id, spec 11.4), and the clean-up of generated captions (spec 5.3).

use std::path::Path;

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::ModelError;
use crate::model::config::read_json_object;

/// Ids of the tokens generation and clean-up care about, looked up by content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: i64,
    pub pad: i64,
    pub eos: i64,
}

/// The tokenizer plus the decode rules of the model directory.
pub struct TextCodec {
    tokenizer: Tokenizer,
    special: SpecialTokens,
    clean_up_tokenization_spaces: bool,
}

/// Florence-2's 1024 added tokens in the order the processor appends them (spec section 7).
pub fn florence_added_tokens() -> Vec<String> {
    let mut tokens: Vec<String> = ["<od>", "</od>", "<ocr>", "</ocr>"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    tokens.extend((0..1000).map(|k| format!("<loc_{k}>")));
    tokens.extend(
        [
            "<cap>",
            "</cap>",
            "<ncap>",
            "</ncap>",
            "<dcap>",
            "</dcap>",
            "<grounding>",
            "</grounding>",
            "<seg>",
            "</seg>",
            "<sep>",
            "<region_cap>",
            "</region_cap>",
            "<region_to_desciption>",
            "</region_to_desciption>",
            "<proposal>",
            "</proposal>",
            "<poly>",
            "</poly>",
            "<and>",
        ]
        .iter()
        .map(|t| t.to_string()),
    );
    tokens
}

impl TextCodec {
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let fail = |message: String| ModelError::ModelDir {
            dir: dir.to_path_buf(),
            message,
        };
        let file = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&file)
            .map_err(|e| fail(format!("cannot load {}: {e}", file.display())))?;
        // Some tokenizer.json revisions lack Florence's added tokens (spec P8); the processor
        // appends them at load, so do the same rather than mis-decode location tokens.
        if tokenizer.token_to_id("<loc_0>").is_none() {
            let added: Vec<AddedToken> = florence_added_tokens()
                .into_iter()
                .map(|t| AddedToken::from(t, true))
                .collect();
            tokenizer.add_special_tokens(&added);
        }
        let config_file = dir.join("tokenizer_config.json");
        // transformers.js loads no tokenizer without this file (spec 11.5); so require it too,
        // rather than run a model its reference implementation cannot.
        let config = read_json_object(&config_file, dir)?;
        let clean_up_tokenization_spaces = config
            .get("clean_up_tokenization_spaces")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let id = |content: &str| -> Result<i64, ModelError> {
            tokenizer
                .token_to_id(content)
                .map(i64::from)
                .ok_or_else(|| fail(format!("{} has no `{content}` token", file.display())))
        };
        let special = SpecialTokens {
            bos: id("<s>")?,
            pad: id("<pad>")?,
            eos: id("</s>")?,
        };
        Ok(Self {
            tokenizer,
            special,
            clean_up_tokenization_spaces,
        })
    }

    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of a prompt with the `<s> … </s>` template applied.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<i64>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Inference {
                stage: "tokenizer",
                message: format!("cannot tokenize the prompt `{text}`: {e}"),
            })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Generated ids (start token included) to a caption: special and location tokens dropped,
    /// tokenization spaces cleaned as the tokenizer config says, whitespace trimmed and collapsed.
    pub fn decode_caption(&self, ids: &[i64]) -> Result<String, ModelError> {
        let ids: Vec<u32> = ids
            .iter()
            .filter_map(|&id| u32::try_from(id).ok())
            .collect();
        let raw = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| ModelError::Inference {
                stage: "decode",
                message: e.to_string(),
            })?;
        let raw = strip_markup_tokens(&raw);
        let raw = if self.clean_up_tokenization_spaces {
            clean_up_tokenization(&raw)
        } else {
            raw
        };
        Ok(raw.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// Removes `<s>`, `</s>`, `<pad>` and `<loc_N>` that survive decoding (a tokenizer whose added
/// tokens are not marked special keeps them as text).
fn strip_markup_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let token_len = tail
            .find('>')
            .map(|end| end + 1)
            .filter(|&len| is_markup_token(&tail[..len]));
        match token_len {
            Some(len) => rest = &tail[len..],
            None => {
                out.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn is_markup_token(token: &str) -> bool {
    matches!(token, "<s>" | "</s>" | "<pad>" | "<unk>")
        || token
            .strip_prefix("<loc_")
            .and_then(|t| t.strip_suffix('>'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The `clean_up_tokenization_spaces` rule of transformers and transformers.js.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_tokens_follow_the_processor_order() {
        let tokens = florence_added_tokens();
        assert_eq!(tokens.len(), 1024);
        assert_eq!(tokens[4], "<loc_0>");
        assert_eq!(tokens[1003], "<loc_999>");
        assert_eq!(tokens[1023], "<and>");
    }

    #[test]
    fn strips_special_and_location_tokens() {
        assert_eq!(
            strip_markup_tokens("</s><s>A green car<loc_53><loc_999> in <b>front</s><pad>"),
            "A green car in <b>front"
        );
        assert_eq!(strip_markup_tokens("a <loc_x> b <"), "a <loc_x> b <");
    }

    #[test]
    fn cleans_tokenization_spaces() {
        assert_eq!(
            clean_up_tokenization("a red shoe , it is n't new ."),
            "a red shoe, it isn't new."
        );
    }
}
