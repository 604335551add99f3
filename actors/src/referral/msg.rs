//! The inputs a referral tree takes of its own: from partners (letters and hand-offs
//! from players' sessions are `crate::mail`'s).

use playtree_protocol::{ErrorReply, RewardState};
use ractor::RpcReplyPort;

#[derive(Debug)]
pub enum TreeInput {
    /// A partner approves (`approve`) or voids a held or flagged reward; answers its
    /// state.
    Decide {
        reward: u64,
        approve: bool,
        reply: RpcReplyPort<Result<RewardState, ErrorReply>>,
    },
}
