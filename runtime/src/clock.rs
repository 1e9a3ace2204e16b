//! The calling thread's CPU time: latency figures on a shared machine, where wall time also
//! counts the time other processes held the core.

/// Thread CPU time in seconds, where the platform offers a per-thread clock.
pub fn thread_cpu_seconds() -> Option<f64> {
    thread_clock::now()
}

#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    target_pointer_width = "64"
))]
mod thread_clock {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

    pub fn now() -> Option<f64> {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` is the C library's (std links it on these targets); it only
        // writes the struct we pass, whose layout matches `struct timespec` on 64-bit Linux.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
}

#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    target_pointer_width = "64"
)))]
mod thread_clock {
    pub fn now() -> Option<f64> {
        None
    }
}
