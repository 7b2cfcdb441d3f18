//! mimalloc, as the binaries use it (feature `allocator`): freed memory
//! goes back to the system at once.

/// mimalloc's `mi_option_purge_delay` (mimalloc.h of the v3 the crate
/// builds: the option just before `mi_option_use_numa_nodes`; the Rust
/// bindings have no name for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Gives freed memory back to the system at once rather than a second later
/// (mimalloc v3's default). Memory freed on one thread while another builds
/// the next batch (or page) would otherwise stay resident: the uplink's
/// peak RSS is about 5 MiB higher with the delay (docs/performance.md, the
/// uplink's table).
pub fn purge_freed_memory_at_once() {
    // SAFETY: sets a process-wide allocator option; mimalloc reads it at
    // each purge, and any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_is_the_option_set() {
        // The option's default in mimalloc v3 is 1,000 ms (options.c): a
        // check that the index names the option meant.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            1000
        );
        purge_freed_memory_at_once();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
