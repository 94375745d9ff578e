//! A robust, process-shared pthread mutex that lives inside the segment.
//!
//! Why not raw_sync (docs/decisions.md): its mutexes are not robust, so a worker
//! killed while holding one blocks every other worker for ever; its timed waits
//! fail with EINVAL; its guard type cannot be built outside the crate.
//!
//! A robust mutex whose owner dies is handed to the next locker with
//! EOWNERDEAD. That locker gets [`Acquired::OwnerDied`], repairs whatever the
//! lock guards, and calls [`LockGuard::mark_consistent`]; if it unlocked
//! without doing so, the mutex would become unusable (ENOTRECOVERABLE).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;

/// One robust mutex, padded to a cache line so that neighbouring stripes do not
/// share one.
#[repr(C, align(64))]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: the mutex is designed for concurrent use from many threads and
// processes; all access goes through pthread calls.
unsafe impl Sync for RobustMutex {}

/// The outcome of taking a lock.
pub enum Acquired<'a> {
    /// The lock was free or released normally.
    Clean(LockGuard<'a>),
    /// The previous owner died holding it: repair, then `mark_consistent`.
    OwnerDied(LockGuard<'a>),
}

impl<'a> Acquired<'a> {
    /// The guard, for callers whose data needs no repair (every state it can be
    /// left in is valid): marks the mutex consistent straight away.
    pub fn repaired_trivially(self) -> LockGuard<'a> {
        match self {
            Acquired::Clean(g) => g,
            Acquired::OwnerDied(g) => {
                g.mark_consistent();
                g
            }
        }
    }
}

/// Holds the mutex; unlocks on drop.
pub struct LockGuard<'a> {
    mutex: &'a RobustMutex,
}

impl RobustMutex {
    /// Initialise a mutex in place as process-shared and robust.
    ///
    /// # Safety
    /// `this` must point to writable memory of the segment, aligned for
    /// `RobustMutex`, that no process is using as a lock at this moment (the
    /// segment is being laid out and no worker exists yet).
    pub unsafe fn init(this: *mut RobustMutex) {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is a local the pthread calls initialise; `this` is valid
        // and unshared by the caller's contract.
        unsafe {
            check(
                libc::pthread_mutexattr_init(attr.as_mut_ptr()),
                "mutexattr_init",
            );
            check(
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
                "mutexattr_setpshared",
            );
            check(
                libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST),
                "mutexattr_setrobust",
            );
            check(
                libc::pthread_mutex_init((*this).raw.get(), attr.as_ptr()),
                "mutex_init",
            );
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
    }

    /// Block until the lock is ours.
    pub fn lock(&self) -> Acquired<'_> {
        // SAFETY: raw was initialised by `init` before any process could reach it.
        let rc = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        self.acquired(rc)
            .expect("pthread_mutex_lock cannot be busy")
    }

    /// Take the lock only if it is free now.
    pub fn try_lock(&self) -> Option<Acquired<'_>> {
        // SAFETY: as in `lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.raw.get()) };
        self.acquired(rc)
    }

    fn acquired(&self, rc: libc::c_int) -> Option<Acquired<'_>> {
        let guard = LockGuard { mutex: self };
        match rc {
            0 => Some(Acquired::Clean(guard)),
            libc::EOWNERDEAD => Some(Acquired::OwnerDied(guard)),
            // EDEADLK: a try on a lock this process holds (eviction may try
            // the stripe its own caller holds).
            libc::EBUSY | libc::EDEADLK => {
                std::mem::forget(guard);
                None
            }
            // ENOTRECOVERABLE means someone unlocked after EOWNERDEAD without
            // repairing: our code never does, so the segment is not ours to trust.
            other => {
                std::mem::forget(guard);
                panic!(
                    "robust mutex failed: {}",
                    std::io::Error::from_raw_os_error(other)
                )
            }
        }
    }
}

impl LockGuard<'_> {
    /// Declare the guarded data repaired after EOWNERDEAD.
    pub fn mark_consistent(&self) {
        // SAFETY: we hold the mutex (this guard exists) and it is robust.
        check(
            unsafe { libc::pthread_mutex_consistent(self.mutex.raw.get()) },
            "mutex_consistent",
        );
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard proves we hold the mutex.
        unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
    }
}

fn check(rc: libc::c_int, what: &str) {
    if rc != 0 {
        panic!("pthread_{what}: {}", std::io::Error::from_raw_os_error(rc));
    }
}
