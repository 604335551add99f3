//! Any byte string fed to the decoders gives a frame or an error — never a panic, and
//! never an allocation beyond the decode limit, whatever lengths the bytes claim.

// The only unsafe code in the workspace: a global allocator that forwards to `System`
// and records allocation sizes, so that the test can measure what decoding allocates.
#![allow(unsafe_code)]

use playtree_protocol::codec::{decode_client, decode_server, encode_client};
use playtree_protocol::limits::FRAME_BYTES_HARD_MAX;
use playtree_protocol::{ClientFrame, Hello, Request};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Records the largest single allocation made by the current thread while armed.
struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // try_with: thread-locals may be gone while a thread shuts down.
        let _ = ARMED.try_with(|armed| {
            if armed.get() {
                let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(layout.size())));
            }
        });
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// The largest single allocation `decode` makes.
fn largest_allocation<T>(decode: impl FnOnce() -> T) -> usize {
    LARGEST.with(|largest| largest.set(0));
    ARMED.with(|armed| armed.set(true));
    let result = decode();
    ARMED.with(|armed| armed.set(false));
    drop(result);
    LARGEST.with(Cell::get)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn random_bytes_never_panic_or_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let largest = largest_allocation(|| decode_client(&bytes, 1024));
        prop_assert!(largest <= FRAME_BYTES_HARD_MAX, "allocated {largest} bytes");
        let largest = largest_allocation(|| decode_server(&bytes, 1024));
        prop_assert!(largest <= FRAME_BYTES_HARD_MAX, "allocated {largest} bytes");
    }

    #[test]
    fn mutated_valid_frames_never_panic_or_overallocate(
        token in "[a-z]{0,40}",
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = encode_client(&ClientFrame::Hello(Hello { protocol_version: 1, token, resume: vec![] }));
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        let largest = largest_allocation(|| decode_client(&bytes, 1024));
        prop_assert!(largest <= FRAME_BYTES_HARD_MAX, "allocated {largest} bytes");
    }

    #[test]
    fn valid_requests_round_trip(req_id in any::<u32>(), room in any::<u64>(), seed in "[!-~]{1,64}") {
        let frame = ClientFrame::Request { req_id, request: Request::Spin { room, client_seed: seed } };
        prop_assert_eq!(decode_client(&encode_client(&frame), 1024), Ok(frame));
    }
}

#[test]
fn claimed_lengths_far_beyond_the_frame_are_errors_without_big_allocations() {
    // Hello, version 1, a token "length" of 2^32 - 1, then a few bytes.
    let mut bytes = vec![0x00, 0x01, 0xFC, 0xFF, 0xFF, 0xFF, 0xFF];
    bytes.extend_from_slice(b"abc");
    let largest = largest_allocation(|| assert!(decode_client(&bytes, 1024).is_err()));
    assert!(largest <= FRAME_BYTES_HARD_MAX, "allocated {largest} bytes");
    // A resume list claiming 2^60 entries.
    let mut bytes = vec![0x00, 0x01, 0x00, 0xFD];
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let largest = largest_allocation(|| assert!(decode_client(&bytes, 1024).is_err()));
    assert!(largest <= FRAME_BYTES_HARD_MAX, "allocated {largest} bytes");
}

#[test]
fn the_tracker_sees_what_decoding_allocates() {
    // Without this, a broken tracker (always 0) would make the bounds above vacuous.
    let frame = ClientFrame::Hello(Hello {
        protocol_version: 1,
        token: "t".repeat(300),
        resume: vec![],
    });
    let bytes = encode_client(&frame);
    let largest = largest_allocation(|| decode_client(&bytes, 1024));
    assert!(largest >= 300, "tracker saw only {largest} bytes");
}
