//! Describe-and-store: validated requests in, stored descriptions out. The steps every surface
//! shares, in order: hash inline images once, claim the `Idempotency-Key`, take admission
//! permits without waiting, fetch image URLs, run the engine, assemble the description, and
//! store it with its usage row and the replayable answer in one transaction.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::Value;

use super::idempotency::{Claimed, Idempotency, Named, fingerprint};
use super::outputs::{Fit, assemble};
use super::request::{
    DescribeRequest, ImageSource, PlannedOutput, ValidDescribeRequest, ValidationError, Validator,
};
use super::review;
use super::{DescribeError, DescribeOptions};
use crate::engine::{Engine, ImageBytes, Permits};
use crate::fetch::ImageFetcher;
use crate::store::descriptions::{Description, ImageFacts, Provenance};
use crate::store::ids::{AccountId, DescriptionId};
use crate::store::job_items::ItemClaim;
use crate::store::{Store, now_ms};

/// How long an `Idempotency-Key`'s answer is replayed.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Cheap handle to the describe service.
#[derive(Clone)]
pub struct DescribeService {
    inner: Arc<Inner>,
}

struct Inner {
    /// In the validator's order: a valid request's `model` indexes it.
    models: Vec<ServedModel>,
    store: Store,
    fetcher: Arc<ImageFetcher>,
    validator: Validator,
    max_image_bytes: u64,
}

/// A loaded model as requests reach it: its name (what `model` says, and what descriptions
/// record) and its engine (its own workers, queue and admission).
#[derive(Clone)]
pub struct ServedModel {
    pub name: String,
    pub engine: Engine,
}

/// Who asks, and under which key.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub account_id: &'a AccountId,
    pub request_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    /// Part of the fingerprint: the same key on another route is another request.
    pub route: &'static str,
}

/// The answer as the surface sends it, stored with the work so that a replay gets it byte for
/// byte.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub status: u16,
    pub body: String,
}

/// One description made, with where its time went.
#[derive(Debug, Clone)]
pub struct Described {
    pub description: Description,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

/// What a describe call gave.
#[derive(Debug)]
pub enum Answer {
    /// The stored answer of an earlier call with the same key and request: not run, not billed.
    Replay(Rendered),
    /// The work ran and is stored; the timings are the longest among the images.
    Done {
        rendered: Rendered,
        queue_time: Duration,
        inference_time: Duration,
    },
}

/// An image ready to run: inline bytes hashed, or a URL to fetch once admitted.
enum Source {
    Bytes(ImageBytes),
    Url(String),
}

struct Ready {
    source: Source,
    model: usize,
    outputs: Vec<PlannedOutput>,
    asked: DescribeOptions,
    language: String,
    seed: Option<u64>,
}

impl DescribeService {
    /// `models` in the operator's order: the first answers requests that name none.
    /// `max_num_beams` is the server's cap (`--max-num-beams`).
    pub fn new(
        models: Vec<ServedModel>,
        store: Store,
        fetcher: Arc<ImageFetcher>,
        max_num_beams: usize,
        max_image_bytes: u64,
    ) -> Self {
        let validator = Validator::new(
            models
                .iter()
                .map(|m| (m.name.clone(), m.engine.card().clone()))
                .collect(),
            max_num_beams,
        );
        Self {
            inner: Arc::new(Inner {
                models,
                store,
                fetcher,
                validator,
                max_image_bytes,
            }),
        }
    }

    pub fn validator(&self) -> &Validator {
        &self.inner.validator
    }

    pub fn models(&self) -> &[ServedModel] {
        &self.inner.models
    }

    /// The validation stage, for every image of a call; the first refusal is the answer.
    pub fn validate(
        &self,
        requests: Vec<DescribeRequest>,
    ) -> Result<Vec<ValidDescribeRequest>, ValidationError> {
        requests
            .into_iter()
            .map(|request| self.inner.validator.validate(request))
            .collect()
    }

    /// One image, all or nothing: any failure is the call's answer, and nothing is stored or
    /// billed.
    pub async fn describe_one(
        &self,
        call: Call<'_>,
        request: ValidDescribeRequest,
        render: impl FnOnce(&Description) -> Rendered,
    ) -> Result<Answer, DescribeError> {
        let mut ready = ready(vec![request]).await?;
        let guard = match self.claim(&call, &ready).await? {
            Claimed::Fresh(guard) => guard,
            Claimed::Replay { status, body } => {
                return Ok(Answer::Replay(Rendered { status, body }));
            }
        };
        let image = ready.pop().expect("one request; this is a bug");
        let permits = match self.inner.models[image.model].engine.try_admit(1) {
            Ok(permits) => permits,
            Err(error) => return guard.fail(error).await,
        };
        let described = match self.run(permits, image).await {
            Ok(described) => described,
            Err(error) => return guard.fail(error).await,
        };
        let rendered = render(&described.description);
        let descriptions = std::slice::from_ref(&described.description);
        let completion = guard.completion(rendered.status, &rendered.body);
        let saved = self.save(&call, descriptions, completion).await;
        if let Err(error) = saved {
            // Not stored, so not billed: the caller gets an error and may retry.
            return guard.fail(error).await;
        }
        guard.answered();
        Ok(Answer::Done {
            rendered,
            queue_time: described.queue_time,
            inference_time: described.inference_time,
        })
    }

    /// Several images, admitted whole or refused whole; then each its own result, in order: an
    /// image that fails (bad bytes, URL failure, queue timeout, inference failure) does not fail
    /// the others. Only what succeeded is stored and billed.
    pub async fn describe_many(
        &self,
        call: Call<'_>,
        requests: Vec<ValidDescribeRequest>,
        render: impl FnOnce(&[Result<Described, DescribeError>]) -> Rendered,
    ) -> Result<Answer, DescribeError> {
        let ready = ready(requests).await?;
        let guard = match self.claim(&call, &ready).await? {
            Claimed::Fresh(guard) => guard,
            Claimed::Replay { status, body } => {
                return Ok(Answer::Replay(Rendered { status, body }));
            }
        };
        // Each model's engine admits its own images; all of them or none.
        let mut permits: Vec<Option<Permits>> = Vec::new();
        for (index, served) in self.inner.models.iter().enumerate() {
            let images = ready.iter().filter(|image| image.model == index).count();
            permits.push(match images {
                0 => None,
                n => match served.engine.try_admit(n) {
                    Ok(permits) => Some(permits),
                    Err(error) => return guard.fail(error).await,
                },
            });
        }
        let runs = ready.into_iter().map(|image| {
            let permit = permits[image.model]
                .as_mut()
                .and_then(Permits::split_one)
                .expect("one permit per image; this is a bug");
            self.run(permit, image)
        });
        let results = join_all(runs).await;
        let (mut queue_time, mut inference_time) = (Duration::ZERO, Duration::ZERO);
        let mut descriptions = Vec::new();
        for described in results.iter().flatten() {
            queue_time = queue_time.max(described.queue_time);
            inference_time = inference_time.max(described.inference_time);
            descriptions.push(described.description.clone());
        }
        let rendered = render(&results);
        // When no image succeeded there is nothing to replay: a retry should run again.
        let completion = if descriptions.is_empty() {
            None
        } else {
            guard.completion(rendered.status, &rendered.body)
        };
        let stored = completion.is_some();
        if let Err(error) = self.save(&call, &descriptions, completion).await {
            return guard.fail(error).await;
        }
        if stored {
            guard.answered();
        } else {
            guard.release().await;
        }
        Ok(Answer::Done {
            rendered,
            queue_time,
            inference_time,
        })
    }

    /// A bulk job's item: described as `describe_one` describes a request (the same model path,
    /// the same stored description and usage row), under a permit the job runner took from
    /// spare capacity, and stored in the transaction that marks the item succeeded, only while
    /// `claim` still holds it. `Ok(None)`: the claim was gone (the job was cancelled, or another
    /// replica took the item over), so nothing was stored or billed.
    pub async fn describe_job_item(
        &self,
        account_id: &AccountId,
        request_id: &str,
        request: ValidDescribeRequest,
        permits: Permits,
        claim: ItemClaim<'_>,
    ) -> Result<Option<Described>, DescribeError> {
        let image = ready(vec![request]).await?.remove(0);
        let described = self.run(permits, image).await?;
        let stored = self
            .inner
            .store
            .save_job_item(account_id, request_id, &described.description, claim)
            .await?;
        Ok(stored.then_some(described))
    }

    async fn claim(&self, call: &Call<'_>, ready: &[Ready]) -> Result<Claimed, DescribeError> {
        let named = || {
            fingerprint(
                call.route,
                ready.iter().map(|image| {
                    let name = match &image.source {
                        Source::Bytes(bytes) => Named::Sha256(&bytes.sha256),
                        Source::Url(url) => Named::Url(url),
                    };
                    let detail = image
                        .outputs
                        .first()
                        .map(|o| o.generation.task.detail)
                        .unwrap_or_default();
                    (name, detail, &image.asked)
                }),
            )
        };
        Idempotency::claim(
            &self.inner.store,
            call.account_id,
            call.idempotency_key.map(str::to_string),
            call.route,
            named,
            IDEMPOTENCY_WINDOW_MS,
        )
        .await
    }

    async fn save(
        &self,
        call: &Call<'_>,
        descriptions: &[Description],
        completion: Option<crate::store::idempotency::Completion<'_>>,
    ) -> Result<(), DescribeError> {
        self.inner
            .store
            .save_created(call.account_id, call.request_id, descriptions, completion)
            .await
            .map_err(DescribeError::from)
    }

    /// One admitted image through its model's engine (each output a row over the one prepared
    /// image), and its description assembled (not yet stored).
    async fn run(&self, permit: Permits, image: Ready) -> Result<Described, DescribeError> {
        let inner = &self.inner;
        let bytes = match image.source {
            Source::Bytes(bytes) => bytes,
            Source::Url(url) => hashed(vec![inner.fetcher.fetch(&url).await?])
                .await?
                .remove(0),
        };
        if bytes.bytes.len() as u64 > inner.max_image_bytes {
            return Err(DescribeError::ImageTooLarge {
                bytes: bytes.bytes.len(),
                limit: inner.max_image_bytes,
            });
        }
        let served = &inner.models[image.model];
        let generations = image.outputs.iter().map(|o| o.generation.clone()).collect();
        let described = served.engine.describe(permit, bytes, generations).await?;
        let assembled = assemble(&image.outputs, &described.generated);
        let title = image.asked.context.as_ref().and_then(|c| c.title.clone());
        let (findings, lint_level) = review::findings(
            &assembled.outputs,
            &image.language,
            title.as_deref(),
            |output| {
                image
                    .outputs
                    .iter()
                    .find(|planned| planned.output == output)
                    .map_or(Fit::Whole, |planned| planned.fit)
            },
        );
        let facts = &described.image;
        let card = served.engine.card();
        let now = now_ms();
        let description = Description {
            id: DescriptionId::generate(),
            text: assembled.text,
            outputs: Value::Object(assembled.outputs),
            provenance: Provenance::Ai,
            version: 1,
            // Florence-2's caption length; families without one leave it out.
            detail: card
                .capabilities
                .detail
                .then(|| image.outputs[0].generation.task.detail.as_str().to_string()),
            model: served.name.clone(),
            language: image.language,
            context: image
                .asked
                .context
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| c.to_json()),
            tone: image.asked.tone.clone(),
            asset_id: image.asked.asset_id.clone(),
            metadata: image.asked.metadata.clone(),
            image: ImageFacts {
                width: facts.width,
                height: facts.height,
                format: facts.format.as_str().to_string(),
                byte_size: facts.byte_size as u64,
                sha256: facts.sha256.clone(),
            },
            options: asked_generation(&image.asked, image.seed),
            generated_tokens: assembled.generated_tokens,
            finish_reason: assembled.finish_reason.as_str().to_string(),
            truncated: assembled.truncated,
            created_at: now,
            updated_at: now,
            findings: Some(
                serde_json::to_value(findings).expect("findings serialise; this is a bug"),
            ),
            lint_level: Some(lint_level),
            review: crate::store::review::Review {
                status: crate::store::review::ReviewStatus::Unreviewed,
                by: None,
                at: None,
            },
        };
        Ok(Described {
            description,
            queue_time: described.queue_time,
            inference_time: described.inference_time,
        })
    }
}

/// The options the caller set that shaped the text, as stored with the description (defaults
/// are not listed: they may change between versions).
fn asked_generation(asked: &DescribeOptions, seed: Option<u64>) -> Value {
    let mut options = serde_json::Map::new();
    if let Some(outputs) = &asked.outputs {
        options.insert("outputs".into(), outputs.clone().into());
    }
    for (name, value) in [
        ("max_words", asked.max_words),
        ("keyword_count", asked.keyword_count),
    ] {
        if let Some(value) = value {
            options.insert(name.into(), value.into());
        }
    }
    if let Some(temperature) = asked.temperature.filter(|t| *t > 0.0) {
        options.insert("temperature".into(), f64::from(temperature).into());
        if let Some(top_p) = asked.top_p {
            options.insert("top_p".into(), f64::from(top_p).into());
        }
    }
    // The seed sampling used, drawn when the caller gave none: with it the text can be made
    // again.
    if let Some(seed) = seed {
        options.insert("seed".into(), seed.into());
    }
    if let Some(max) = asked.max_chars {
        options.insert("max_chars".into(), max.into());
    }
    if let Some(max) = asked.max_new_tokens {
        options.insert("max_new_tokens".into(), max.into());
    }
    if let Some(beams) = asked.num_beams {
        options.insert("num_beams".into(), beams.into());
    }
    Value::Object(options)
}

/// Inline images hashed (once, off the async workers); URLs wait for their fetch.
async fn ready(requests: Vec<ValidDescribeRequest>) -> Result<Vec<Ready>, DescribeError> {
    let mut inline = Vec::new();
    let mut parts = Vec::with_capacity(requests.len());
    for mut request in requests {
        let source = match std::mem::replace(&mut request.source, ImageSource::Url(String::new())) {
            ImageSource::Bytes(bytes) => {
                inline.push(bytes);
                None
            }
            ImageSource::Url(url) => Some(url),
        };
        parts.push((source, request));
    }
    let mut hashed = hashed(inline).await?.into_iter();
    Ok(parts
        .into_iter()
        .map(|(url, request)| Ready {
            source: match url {
                Some(url) => Source::Url(url),
                None => Source::Bytes(hashed.next().expect("one hash per inline image")),
            },
            model: request.model,
            outputs: request.outputs,
            asked: request.asked,
            language: request.language,
            seed: request.seed,
        })
        .collect())
}

/// SHA-256 of each image, on the blocking pool: tens of milliseconds for a large image.
async fn hashed(images: Vec<Bytes>) -> Result<Vec<ImageBytes>, DescribeError> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    tokio::task::spawn_blocking(move || {
        images
            .into_iter()
            .map(|bytes| {
                use sha2::{Digest, Sha256};
                let sha256 = format!("{:x}", Sha256::digest(&bytes));
                ImageBytes { bytes, sha256 }
            })
            .collect()
    })
    .await
    .map_err(|e| {
        DescribeError::Engine(crate::engine::EngineError::Inference(format!(
            "hashing the image panicked: {e}"
        )))
    })
}
