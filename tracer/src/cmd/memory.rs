//! Hands freed heap memory back to the kernel, which glibc's allocator otherwise keeps: after
//! start-up (parsing the kernel's BTF is the largest passing allocation) and every 10 s (after
//! a burst, or a summary window of up to `--max-destinations` destinations).
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns unused pages at the top and middle of the heap to the
    // kernel; it takes the allocator's locks itself and may be called at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
