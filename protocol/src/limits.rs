//! Named size limits of the protocol. The server's configured limits must lie within
//! these hard bounds; the codec never lets a decode claim more memory than they allow.

/// Default largest frame, in bytes, a server accepts from a client.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// No configuration may raise the frame limit above this. The decoder's allocation
/// budget is this many bytes, whatever the frame says about its own lengths.
pub const FRAME_BYTES_HARD_MAX: usize = 1024 * 1024;

/// Largest persisted record (a snapshot or journal entry) the store will decode.
pub const RECORD_BYTES_HARD_MAX: usize = 64 * 1024 * 1024;

/// Longest client seed accepted for a spin, in bytes.
pub const CLIENT_SEED_BYTES_MAX: usize = 64;

/// Longest bearer token accepted in `Hello`, in bytes.
pub const TOKEN_BYTES_MAX: usize = 4096;

/// Most resume positions one `Hello` may carry.
pub const RESUME_STREAMS_MAX: usize = 64;
