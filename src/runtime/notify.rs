//! A single-waiter wake-up flag for tasks on one executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Resolves once `notify` has been called since the last wait.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

pub struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.notify.notified.replace(false) {
            Poll::Ready(())
        } else {
            *self.notify.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        }
    }
}

/// Wakes every waiting task (for readers waiting on the applier).
#[derive(Default)]
pub struct NotifyAll {
    wakers: RefCell<Vec<Waker>>,
}

impl NotifyAll {
    pub fn notify_all(&self) {
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves at the next `notify_all`.
    pub async fn notified(&self) {
        let mut registered = false;
        std::future::poll_fn(|context| {
            if registered {
                Poll::Ready(())
            } else {
                registered = true;
                self.wakers.borrow_mut().push(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
