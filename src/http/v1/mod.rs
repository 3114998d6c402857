//! The v1 API, a module per surface: descriptions (create, stored, export), bulk jobs, the caller's
//! account and its activity (request log, audit events), the operator's admin routes, and
//! Stripe's webhook; the resources they answer with; and the paged streams both exports are
//! written with.

pub mod account;
pub mod activity;
pub mod admin;
pub mod descriptions;
pub mod jobs;
pub mod resources;
pub mod stripe_webhook;

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;

/// Rows fetched per step of an export: bounds memory whatever the account's size.
pub const EXPORT_PAGE: i64 = 500;

/// A body chunk of a streamed answer; an error cuts the answer short.
pub type Chunk = Result<Bytes, std::io::Error>;

/// A listing read a page at a time into body chunks: `next(cursor)` gives a page's chunk and the
/// cursor of the next page (`None` when this was the last). The status is sent before the first
/// page is read, so a failure then ends the stream with an error: the client sees a body cut
/// short (no final chunk), never a complete-looking one.
pub fn paged<C, F, Fut>(mut next: F) -> impl Stream<Item = Chunk> + Send
where
    C: Send + 'static,
    F: FnMut(Option<C>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Vec<u8>, Option<C>), String>> + Send,
{
    // (the next page's cursor, whether a page is left)
    futures_util::stream::unfold((None::<C>, true), move |(cursor, more)| {
        let page = more.then(|| next(cursor));
        async move {
            match page?.await {
                Ok((chunk, next)) => {
                    let more = next.is_some();
                    Some((Ok(Bytes::from(chunk)), (next, more)))
                }
                Err(error) => {
                    tracing::warn!(%error, "export failed mid-stream");
                    Some((Err(std::io::Error::other(error)), (None, false)))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn pages_follow_their_cursor_and_a_failure_ends_the_stream() {
        let pages = paged(|cursor: Option<u32>| async move {
            match cursor.unwrap_or(0) {
                2 => Err("the database went away".to_string()),
                n => Ok((format!("page{n};").into_bytes(), Some(n + 1))),
            }
        });
        let chunks: Vec<Chunk> = pages.collect().await;
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].as_ref().unwrap(), "page0;");
        assert_eq!(chunks[1].as_ref().unwrap(), "page1;");
        assert!(chunks[2].is_err());

        let done = paged(|cursor: Option<u32>| async move {
            Ok((vec![b'x'], cursor.is_none().then_some(1)))
        });
        assert_eq!(done.collect::<Vec<_>>().await.len(), 2);
    }
}
