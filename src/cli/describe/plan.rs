//! A run's plans: the flags checked by the API's one validation stage (`Validator::plan`), once
//! for the images without product context and once per context row, all before any image is
//! read. What the API refuses the CLI refuses, with the API's message.

use std::path::PathBuf;

use serde_json::Value;

use super::context_file::ContextFile;
use crate::describe::request::{DescribeOptions, ValidDescribeRequest, ValidationError, Validator};
use crate::model::ModelCard;

/// Every image's plan: which outputs with which options, its language and seed.
#[derive(Debug)]
pub struct RunPlan {
    /// `[0]`: the flags alone; `[1 + r]`: the flags with context row `r`.
    plans: Vec<ValidDescribeRequest>,
    /// For each image (by index), its plan's index.
    of_image: Vec<usize>,
}

/// The options, or one context row with them, refused by the validation stage.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{}: {}; {FLAG_NAMES}", error.code, error.message)]
    Flags { error: ValidationError },
    #[error("--context {} line {line}: {}: {}", file.display(), error.code, error.message)]
    Row {
        file: PathBuf,
        line: usize,
        error: ValidationError,
    },
}

/// The API names its options; each is the flag of the same name here.
const FLAG_NAMES: &str = "the options named are this command's flags (`max_words` is --max-words)";

impl RunPlan {
    /// Plans `images` images: `options` from the flags, `context` the rows of `--context`.
    /// A sampled run without `--seed` draws one seed for every image, so that the record's seed
    /// with the same flags makes the whole run again.
    pub fn new(
        model: (String, ModelCard),
        mut options: DescribeOptions,
        context: Option<&ContextFile>,
        images: usize,
    ) -> Result<Self, Refused> {
        // One model, so no beam cap beyond the family's.
        let validator = Validator::new(vec![model], usize::MAX);
        let base = validator
            .plan(&options)
            .map_err(|error| Refused::Flags { error })?;
        options.seed = base.seed;
        let mut plans = vec![base];
        let mut of_image = vec![0; images];
        if let Some(file) = context {
            for found in &file.rows {
                let mut with_context = options.clone();
                with_context.context = Some(found.context.clone());
                let plan = validator
                    .plan(&with_context)
                    .map_err(|error| Refused::Row {
                        file: file.file.clone(),
                        line: found.line,
                        error,
                    })?;
                plans.push(plan);
            }
            for (plan, row) in of_image.iter_mut().zip(&file.of_image) {
                *plan = row.map_or(0, |row| row + 1);
            }
        }
        Ok(Self { plans, of_image })
    }

    /// The seed of a sampled run, the same for every image.
    pub fn seed(&self) -> Option<u64> {
        self.plans[0].seed
    }

    /// The plan of image `index`.
    pub fn of(&self, index: usize) -> &ValidDescribeRequest {
        &self.plans[self.of_image[index]]
    }
}

/// The product context a plan used, as the API records it; absent when none.
pub fn context_json(plan: &ValidDescribeRequest) -> Option<Value> {
    plan.asked
        .context
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| c.to_json())
}
