//! The server's memory allocator: mimalloc (`libmimalloc-sys`), which the
//! `warden` binary installs as its global allocator. Writes allocate and free
//! many small objects on one core that another core frees (txns, paths,
//! replies); under glibc's malloc that was 15-18 % of the server's CPU.
//! Libraries and tests that link warden keep the system allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc as a `GlobalAlloc`.
pub struct Mimalloc;

// SAFETY: each call forwards to mimalloc's aligned entry points, which honour
// the layout's size and alignment; memory is freed by the allocator that
// handed it out, since this is the only global allocator.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast() }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe { libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { libmimalloc_sys::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract).
        unsafe { libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast() }
    }
}

/// Returns free heap pages to the kernel, after start-up or a reload freed a
/// whole tree and the buffers that rebuilt it: mimalloc's (the server
/// binary's allocator) and glibc's (any other binary's), whichever holds
/// them. A server restarted on 300,000 znodes held 10-25 % more without it.
pub fn trim_heap() {
    // SAFETY: both calls only release memory that no allocation uses.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(target_env = "gnu")]
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_aligned_zeroed_and_grows() {
        let allocator = Mimalloc;
        for (size, align) in [(8, 8), (24, 8), (100, 16), (4096, 4096), (1 << 20, 64)] {
            let layout = Layout::from_size_align(size, align).expect("valid layout");
            // SAFETY: non-zero sizes; every pointer is freed with its layout.
            unsafe {
                let zeroed = allocator.alloc_zeroed(layout);
                assert!(!zeroed.is_null() && zeroed as usize % align == 0);
                assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|byte| *byte == 0));
                zeroed.write_bytes(0xAB, size);
                let grown = allocator.realloc(zeroed, layout, size * 2);
                assert!(!grown.is_null() && grown as usize % align == 0);
                assert!(std::slice::from_raw_parts(grown, size).iter().all(|byte| *byte == 0xAB), "realloc kept the bytes");
                allocator.dealloc(grown, Layout::from_size_align(size * 2, align).expect("valid layout"));
                let plain = allocator.alloc(layout);
                assert!(!plain.is_null() && plain as usize % align == 0);
                allocator.dealloc(plain, layout);
            }
        }
        trim_heap();
    }
}
