//! A spin lock that masks IRQs on this CPU while held (Linux `spin_lock_irqsave`).
//!
//! For state that interrupt handlers may need too: the heap, the page-frame allocator and
//! the console. With a plain spin lock, a handler that needs the lock the code it
//! interrupted holds spins forever on its own CPU. Masking IRQs for the (short) time the
//! lock is held makes that impossible; another CPU holding it only makes the handler wait.

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};

use super::{local_irq_restore, local_irq_save};

pub struct IrqSpinLock<T> {
    inner: spin::Mutex<T>,
}

/// The lock held, IRQs masked on this CPU until it is dropped.
pub struct IrqSpinLockGuard<'a, T> {
    guard: ManuallyDrop<spin::MutexGuard<'a, T>>,
    was_masked: bool,
}

impl<T> IrqSpinLock<T> {
    pub const fn new(v: T) -> Self {
        IrqSpinLock { inner: spin::Mutex::new(v) }
    }

    /// Mask IRQs, then spin until the lock is ours.
    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let was_masked = local_irq_save();
        IrqSpinLockGuard { guard: ManuallyDrop::new(self.inner.lock()), was_masked }
    }

    /// Someone holds the lock (a diagnostic: the answer may be stale at once).
    pub fn is_locked(&self) -> bool {
        self.inner.is_locked()
    }
}

impl<T> Deref for IrqSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for IrqSpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here; the field is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.guard) };
        // Only now, with the lock released, may an interrupt come in.
        local_irq_restore(self.was_masked);
    }
}
