//! What a failed item attempt means for the item: give the claim back untouched (not the item's
//! fault: no capacity, draining, the database), retry later (a transient fetch failure, a few
//! times), or fail the item for good with its error code (never the job).

use crate::describe::DescribeError;
use crate::engine::EngineError;
use crate::fetch::ImageUrlError;
use crate::model::preprocess::PreprocessError;
use crate::store::StoreError;

/// What to do with an item after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not the item's fault and not an attempt: due again soon, retries untouched.
    GiveBack,
    /// May work next time: due again after a backoff, while attempts are left.
    Retry { code: &'static str, message: String },
    /// Fails the same way every time: the item fails with this error.
    Fail { code: &'static str, message: String },
}

/// The outcome of a describe error, with the stable code a single request's error body would
/// carry (`ApiError`'s codes), so a results file reads like the API's answers.
pub fn classify(error: &DescribeError) -> Outcome {
    let message = error.to_string();
    let fail = |code| Outcome::Fail {
        code,
        message: message.clone(),
    };
    let retry = |code| Outcome::Retry {
        code,
        message: message.clone(),
    };
    match error {
        DescribeError::Invalid(invalid) => fail(invalid.code),
        DescribeError::ImageTooLarge { .. } => fail("image_too_large"),
        DescribeError::Fetch(fetch) => match fetch {
            ImageUrlError::Timeout | ImageUrlError::Unreachable(_) => retry(fetch.code()),
            ImageUrlError::Upstream { status } if *status >= 500 || matches!(status, 408 | 429) => {
                retry(fetch.code())
            }
            _ => fail(fetch.code()),
        },
        DescribeError::Engine(engine) => match engine {
            EngineError::Overloaded { .. }
            | EngineError::Draining { .. }
            | EngineError::QueueTimeout { .. } => Outcome::GiveBack,
            EngineError::Image(PreprocessError::OutOfMemory { .. }) => Outcome::GiveBack,
            EngineError::Image(image) => fail(image.code()),
            EngineError::TooManyImages { .. } => fail("too_many_images"),
            EngineError::Inference(_) => retry("inference_failed"),
        },
        DescribeError::Store(StoreError::Unavailable(_)) => Outcome::GiveBack,
        DescribeError::Store(_) => retry("internal_error"),
        // Jobs claim no `Idempotency-Key`.
        DescribeError::IdempotencyKeyReused | DescribeError::IdempotencyKeyInUse => {
            fail("internal_error")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn code(outcome: Outcome) -> (&'static str, &'static str) {
        match outcome {
            Outcome::GiveBack => ("give_back", ""),
            Outcome::Retry { code, .. } => ("retry", code),
            Outcome::Fail { code, .. } => ("fail", code),
        }
    }

    #[test]
    fn transient_fetch_failures_retry_and_the_url_owners_mistakes_fail() {
        let fetch = |e| code(classify(&DescribeError::Fetch(e)));
        assert_eq!(
            fetch(ImageUrlError::Timeout),
            ("retry", "image_url_timeout")
        );
        assert_eq!(
            fetch(ImageUrlError::Upstream { status: 503 }),
            ("retry", "image_url_upstream_error")
        );
        assert_eq!(
            fetch(ImageUrlError::Upstream { status: 404 }),
            ("fail", "image_url_upstream_error")
        );
        assert_eq!(
            fetch(ImageUrlError::ForbiddenAddress("10.0.0.1".into())),
            ("fail", "image_url_forbidden")
        );
        let busy = DescribeError::Engine(EngineError::Overloaded {
            retry_after: Duration::from_secs(1),
        });
        assert_eq!(classify(&busy), Outcome::GiveBack);
        let bad = DescribeError::Engine(EngineError::Image(PreprocessError::UnsupportedFormat));
        assert_eq!(code(classify(&bad)).0, "fail");
    }
}
