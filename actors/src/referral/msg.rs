//! Messages a referral tree takes.

use playtree_protocol::{ErrorReply, GrantId, ReferralStats, RewardState};
use ractor::RpcReplyPort;

#[derive(Debug)]
pub enum TreeMsg {
    /// `referee` joins below `referrer` (who is in this tree, or is its root). Idempotent:
    /// a referee already below this referrer is answered as if attached now.
    Attach {
        referrer: String,
        referee: String,
        /// The claim came from an address past its hourly claims limit: its rewards
        /// are flagged.
        suspect: bool,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// `player` finished a first game; answered once recorded (also if it was before).
    Activated {
        player: String,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// A partner's conversion report for `player`; answers how many rewards it made
    /// (the first report's number again for a repeated key).
    Conversion {
        player: String,
        kind: String,
        key: String,
        reply: RpcReplyPort<Result<u32, ErrorReply>>,
    },
    /// A partner approves (`approve`) or voids a held or flagged reward; answers its
    /// state.
    Decide {
        reward: u64,
        approve: bool,
        reply: RpcReplyPort<Result<RewardState, ErrorReply>>,
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
