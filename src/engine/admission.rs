//! Admission: one permit per image from a global semaphore, taken without waiting, so overload is
//! answered at once (429) instead of piling up; and the draining switch (503).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::EngineError;
use crate::metrics::ModelMetrics;

/// Permits held for admitted images; released when the request is answered or dropped.
pub struct Permits {
    permits: OwnedSemaphorePermit,
    metrics: ModelMetrics,
}

impl Permits {
    /// Splits one image's permit off, so each image of a batch request travels on its own.
    pub fn split_one(&mut self) -> Option<Permits> {
        let one = self.permits.split(1)?;
        Some(Permits {
            permits: one,
            metrics: self.metrics.clone(),
        })
    }

    pub fn count(&self) -> usize {
        self.permits.num_permits()
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.metrics
            .permits_in_use
            .sub(self.permits.num_permits() as i64);
    }
}

#[derive(Clone)]
pub struct Admission {
    semaphore: Arc<Semaphore>,
    capacity: usize,
    draining: Arc<AtomicBool>,
    retry_after: Duration,
    metrics: ModelMetrics,
}

impl Admission {
    pub fn new(capacity: usize, retry_after: Duration, metrics: ModelMetrics) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(capacity)),
            capacity,
            draining: Arc::new(AtomicBool::new(false)),
            retry_after,
            metrics,
        }
    }

    /// Takes `images` permits now or refuses: 503 while draining, 429 when full.
    pub fn try_admit(&self, images: usize) -> Result<Permits, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining {
                retry_after: self.retry_after,
            });
        }
        if images > self.capacity {
            return Err(EngineError::TooManyImages {
                images,
                capacity: self.capacity,
            });
        }
        let permits = self
            .semaphore
            .clone()
            .try_acquire_many_owned(images as u32)
            .map_err(|_| EngineError::Overloaded {
                retry_after: self.retry_after,
            })?;
        self.metrics.permits_in_use.add(images as i64);
        Ok(Permits {
            permits,
            metrics: self.metrics.clone(),
        })
    }

    /// Takes `images` permits only while more than `reserve` would stay free: background work
    /// (bulk jobs) uses spare capacity and leaves `reserve` images to interactive requests.
    pub fn try_admit_spare(&self, images: usize, reserve: usize) -> Result<Permits, EngineError> {
        if self.semaphore.available_permits() < images + reserve {
            return Err(EngineError::Overloaded {
                retry_after: self.retry_after,
            });
        }
        self.try_admit(images)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.metrics.shared.draining.set(1);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn in_use(&self) -> usize {
        self.capacity - self.semaphore.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits until every admitted image has been answered, or the timeout passes.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let all = self
            .semaphore
            .clone()
            .acquire_many_owned(self.capacity as u32);
        matches!(tokio::time::timeout(timeout, all).await, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(capacity: usize) -> Admission {
        Admission::new(
            capacity,
            Duration::from_secs(1),
            ModelMetrics::standalone(8),
        )
    }

    #[tokio::test]
    async fn full_means_overloaded_and_permits_come_back() {
        let admission = admission(3);
        let two = admission.try_admit(2).unwrap();
        assert!(matches!(
            admission.try_admit(2),
            Err(EngineError::Overloaded { .. })
        ));
        let one = admission.try_admit(1).unwrap();
        assert_eq!(admission.in_use(), 3);
        drop(two);
        drop(one);
        assert_eq!(admission.in_use(), 0);
        assert!(matches!(
            admission.try_admit(4),
            Err(EngineError::TooManyImages {
                images: 4,
                capacity: 3
            })
        ));
    }

    #[tokio::test]
    async fn spare_admission_leaves_the_reserve_free() {
        let admission = admission(4);
        let job = admission.try_admit_spare(1, 2).unwrap();
        let _interactive = admission.try_admit(1).unwrap();
        // Two free: taking one more would eat into the reserve of two.
        assert!(matches!(
            admission.try_admit_spare(1, 2),
            Err(EngineError::Overloaded { .. })
        ));
        let _interactive_too = admission.try_admit(2).unwrap();
        drop(job);
        assert_eq!(admission.in_use(), 3);
    }

    #[tokio::test]
    async fn draining_refuses_and_waits_for_in_flight_work() {
        let admission = admission(2);
        let mut held = admission.try_admit(2).unwrap();
        let single = held.split_one().unwrap();
        assert_eq!((held.count(), single.count()), (1, 1));
        admission.start_draining();
        assert!(matches!(
            admission.try_admit(1),
            Err(EngineError::Draining { .. })
        ));
        assert!(!admission.wait_idle(Duration::from_millis(20)).await);
        drop(held);
        drop(single);
        assert!(admission.wait_idle(Duration::from_millis(20)).await);
    }
}
