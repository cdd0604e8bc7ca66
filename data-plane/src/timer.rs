//! hyper's timer for client connections over HTTP/1 (the header read
//! timeout), made lazy. hyper moves the deadline at every request head,
//! and tokio's `Sleep` goes back into the timer wheel at each move (a
//! lock and two wheel operations per request). Here a move only stores the
//! new deadline: the armed `Sleep` is moved when it fires before the
//! deadline (about once per timeout on a busy connection) or when the
//! deadline comes earlier.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

#[derive(Debug, Clone, Copy, Default)]
pub struct LazyTimer;

/// A sleep until `deadline`, armed at or before it.
struct LazySleep {
    deadline: tokio::time::Instant,
    armed: Pin<Box<tokio::time::Sleep>>,
}

impl Future for LazySleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            ready!(this.armed.as_mut().poll(cx));
            if this.armed.deadline() >= this.deadline {
                return Poll::Ready(());
            }
            this.armed.as_mut().reset(this.deadline);
        }
    }
}

impl Sleep for LazySleep {}

impl Timer for LazyTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let deadline = deadline.into();
        Box::pin(LazySleep { deadline, armed: Box::pin(tokio::time::sleep_until(deadline)) })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        let Some(mut sleep) = sleep.as_mut().downcast_mut_pin::<LazySleep>() else { return };
        let deadline = tokio::time::Instant::from(new_deadline);
        sleep.deadline = deadline;
        if deadline < sleep.armed.deadline() {
            sleep.armed.as_mut().reset(deadline);
        }
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_moved_deadline_is_kept_later_and_earlier() {
        let timer = LazyTimer;
        let start = timer.now();
        let mut sleep = timer.sleep(Duration::from_millis(300));
        timer.reset(&mut sleep, start + Duration::from_millis(900));
        tokio::time::timeout(Duration::from_millis(600), sleep.as_mut()).await.expect_err("not before the later deadline");
        sleep.as_mut().await;
        assert!(timer.now() >= start + Duration::from_millis(900));

        let start = timer.now();
        let mut sleep = timer.sleep(Duration::from_secs(30));
        timer.reset(&mut sleep, start + Duration::from_millis(100));
        tokio::time::timeout(Duration::from_secs(10), sleep.as_mut()).await.expect("the earlier deadline holds");
    }
}
