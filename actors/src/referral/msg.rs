//! Messages a referral tree takes.

use playtree_protocol::{ErrorReply, GrantId, ReferralStats};
use ractor::RpcReplyPort;

#[derive(Debug)]
pub enum TreeMsg {
    /// `referee` joins below `referrer` (who is in this tree, or is its root). Idempotent:
    /// a referee already below this referrer is answered as if attached now.
    Attach {
        referrer: String,
        referee: String,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// `player` finished a first game; answered once recorded (also if it was before).
    Activated {
        player: String,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// `player`'s statistics.
    Stats {
        player: String,
        reply: RpcReplyPort<ReferralStats>,
    },
    /// The beneficiary's wallet has the grant; drop it from the outbox.
    GrantAcked { grant: GrantId },
    /// The tree's deadline came: redeliver the outbox.
    Deadline,
}

impl ractor::Message for TreeMsg {}
