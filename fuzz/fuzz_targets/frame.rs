//! libFuzzer entry point for `warden::fuzzing::frame`; the target's body and
//! the properties it checks live there, so the test suite runs them too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::fuzzing::CountingAllocator;

// Counts allocations so that the target can hold decoders to their budget.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fuzz_target!(|data: &[u8]| warden::fuzzing::frame(data));
